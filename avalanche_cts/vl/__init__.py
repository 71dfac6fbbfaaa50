"""Vision-language continual learning with BLIP (VQA and captioning)."""
