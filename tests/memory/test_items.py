"""Item views: ``item_view`` picks how an experience is read, ``ClassItems`` and
``TextItems`` group items and hand out images and batches as given."""
from types import SimpleNamespace

import pytest
import torch

from avalanche_cts.memory.items import ClassItems, TextItems, item_view
from avalanche_cts.models.blip_text import TextSpec, VLCollator

SPEC = TextSpec(pad=0, cls=101, sep=102, bos=30522, vocab_size=30524)


class _Items(list):
    """A list of items with the attributes of an Avalanche dataset."""

    def __init__(self, items, targets=None, tasks=None, collate_fn=None):
        super().__init__(items)
        if targets is not None:
            self.targets = targets
        if tasks is not None:
            self.targets_task_labels = tasks
        if collate_fn is not None:
            self.collate_fn = collate_fn


def _class_data(labels, tasks=None):
    """``(image, label, task)`` items whose image ``i`` is filled with ``i``."""
    tasks = [0] * len(labels) if tasks is None else tasks
    items = [(torch.full((1, 2, 2), float(i)), y, t) for i, (y, t) in enumerate(zip(labels, tasks))]
    return _Items(items, targets=list(labels), tasks=None if tasks is None else list(tasks))


def _vqa_item(i, task):
    return dict(pixel_values=torch.full((3, 4, 4), float(i)), question=torch.tensor([7, i + 1]),
                targets=[torch.tensor([9, i + 2]), torch.tensor([8, i + 5])],
                target_weights=torch.tensor([0.3, 0.7]), task_labels=task)


def test_item_view_picks_class_items_for_tuples(digits_benchmark):
    assert type(item_view(_class_data([1, 2]))) is ClassItems
    assert type(item_view(digits_benchmark.train_stream[0].dataset)) is ClassItems
    assert type(item_view(_Items([]))) is ClassItems  # an empty dataset has no dict items


def test_item_view_picks_text_items_for_vl_collated_data():
    collate = VLCollator(SPEC, "vqa")
    view = item_view(_Items([_vqa_item(0, 0)], tasks=[0], collate_fn=collate))
    assert type(view) is TextItems and view.collate is collate
    assert view.text_fields == ("question", "target")
    restored = item_view(None, view.state())  # a saved memory's text settings
    assert type(restored) is TextItems and restored.collate.state() == collate.state()


@pytest.mark.parametrize("collate_fn", [None, lambda items: items])
def test_item_view_refuses_other_dicts(collate_fn):
    data = _Items([_vqa_item(0, 0)], tasks=[0], collate_fn=collate_fn)
    with pytest.raises(TypeError, match="dict items need a dataset collated by "
                                        "avalanche_cts.models.blip_text.VLCollator"):
        item_view(data)


def test_class_items_keys_are_the_labels_and_tasks_as_given():
    labels, tasks = [3, 1, 3, 7, 0], [0, 2, 1, 2, 0]
    y, t = ClassItems().keys(_class_data(labels, tasks))
    assert y.dtype == t.dtype == torch.int64
    assert y.tolist() == labels and t.tolist() == tasks


def test_class_items_keys_default_to_task_zero():
    data = _Items([(torch.zeros(1, 2, 2), 4)] * 3, targets=[4, 5, 4])
    y, t = ClassItems().keys(data)
    assert y.tolist() == [4, 5, 4] and t.tolist() == [0, 0, 0]


def test_class_items_keys_match_an_avalanche_experience(digits_benchmark):
    data = digits_benchmark.train_stream[1].dataset
    y, t = ClassItems().keys(data)
    assert y.tolist() == [int(data[i][1]) for i in range(len(data))]
    assert t.tolist() == [int(data[i][2]) for i in range(len(data))]


def test_class_items_batches_follow_the_indices():
    data = _class_data([5, 6, 7, 8, 9])
    idx = torch.tensor([4, 0, 2])
    batches = list(ClassItems().batches(data, idx, batch_size=2, num_workers=0))
    assert [len(x) for x, _, _ in batches] == [2, 1]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x[:, 0, 0, 0].tolist() == [4.0, 0.0, 2.0]  # image i holds i
    assert y.tolist() == [9, 5, 7] and all(b[2] is None for b in batches)
    assert ClassItems.image(data[3]) is data[3][0]
    with pytest.raises(TypeError, match="classification records hold no text"):
        ClassItems().text_batch([])


def test_text_items_group_by_task_and_keep_question_and_target():
    tasks = [2, 0, 2]
    data = _Items([_vqa_item(i, t) for i, t in enumerate(tasks)], tasks=tasks,
                  collate_fn=VLCollator(SPEC, "vqa"))
    view = item_view(data)
    y, t = view.keys(data)
    assert y.tolist() == [0, 0, 0] and t.tolist() == tasks  # one group per task
    assert view.image(data[1]) is data[1]["pixel_values"]
    (images, text, texts), = view.batches(data, torch.tensor([2, 0]), batch_size=4, num_workers=0)
    assert images[:, 0, 0, 0].tolist() == [2.0, 0.0]
    assert [r["question"].tolist() for r in texts] == [[7, 3], [7, 1]]
    assert [r["target"].tolist() for r in texts] == [[8, 7], [8, 5]]  # the heavier answer
    assert text["input_ids"].shape[0] == 2 and text["labels"].shape[0] == 2
