"""The memory: what stores core tokensets and replays them.

* :mod:`.buffer` ``CoreTokensetBuffer``, the Avalanche storage policy: a :mod:`.store`
  (records, the byte budget, codec, persistence) written by a :mod:`.writer` (quotas,
  selection, scoring, token choice); :mod:`.distributed` shares the writing over
  torch.distributed ranks;
* :mod:`.records` (token groups, batches), :mod:`.codec` (exact pixels), :mod:`.budget`
  (equal shares), :mod:`.items` (classification or image-text experiences);
* :mod:`.plugin` ``CoreTokensetReplayPlugin`` (replay, memory loss) with :mod:`.dropout`
  (token dropout of new data: random or matched to the memory), :mod:`.composite` (records
  written into new-data scenes: replayed samples that look whole), :mod:`.augment` (records
  mirrored and moved when replayed), :mod:`.local_loss` (ER-ACE's loss) and the :mod:`.recipe`;
* :mod:`.inference` ``PartialInferencePlugin``: evaluation images classified from their own
  top tokens (inference in the shape of training);
* :mod:`.settings` ``MemorySettings``: every setting of a memory and its replay, checked once;
* :mod:`.sample_buffers`: Avalanche's whole-sample buffers held to the same bytes.

Names are imported on first use.
"""
from .._lazy import lazy_exports

_EXPORTS = {
    "sample_buffers": ("ByteBudgetResize",),
    "items": ("ClassItems", "TextItems", "item_view"),
    "buffer": ("CoreTokensetBuffer",),
    "plugin": ("CoreTokensetReplayPlugin", "MemoryLoss", "NEW_DATA_LOSSES", "REPLAY_MODES",
               "adapter_record_loss", "augment_refusal", "classification_loss",
               "composite_refusal", "default_memory_loss"),
    "augment": ("RecordAugmentation",),
    "composite": ("SceneCompositor", "pair_scenes", "step_generator", "top_count_mask"),
    "inference": ("PartialInferencePlugin", "check_inference_model", "label_free_scores",
                  "top_tokens_mask"),
    "recipe": ("DEFAULT_RECIPE", "DROPOUT_REFRESH", "DROPOUT_SCHEDULES", "DROPOUT_TOKENS",
               "Recipe", "TOKEN_CHOICES"),
    "distributed": ("DistributedCoreTokensetBuffer", "DistributedMemoryWriter", "buffer_digest",
                    "init_distributed", "is_main_process", "rank", "world_size", "wrap_ddp"),
    "records": ("GROUP_HEADER_BYTES", "LENGTH_DTYPE", "POSITION_DTYPE", "TEXT_DTYPE",
                "RecordRows", "TextCollate", "TokenBatch", "TokenGroup", "TokenMemoryDataset",
                "check_group_state", "collate_tokens"),
    "settings": ("MemorySettings", "RETENTION_RULES", "check_budget_fraction",
                 "check_retention"),
    "writer": ("MemoryWriter",),
    "dropout": ("NewDataDropout", "ScoreCache", "batch_images_targets", "fingerprints"),
    "codec": ("PixelCodec", "STORAGE_DTYPES"),
    "store": ("TokenStore", "check_finite"),
    "budget": ("water_fill",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
