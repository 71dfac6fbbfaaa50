"""The paper's VL streams from local files, on a miniature copy of the expected layouts."""
import json

import pytest
import torch

from avalanche_cts.benchmarks import DatasetLayoutError, make_benchmark
from avalanche_cts.benchmarks.vl.real import coco_class_captions, vqa_sequence
from avalanche_cts.benchmarks.vl.scenes import scene_tokenizer

WORDS = ("what", "colour", "is", "the", "red", "blue", "yes", "no", "a", "car", "truck",
         "book", "on", "road", "2", "3", "how", "many", "are", "there", "cars", "?", ",", "picture", "of")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from avalanche_cts.models.blip_text import closed_tokenizer

    return closed_tokenizer(WORDS, tmp_path_factory.mktemp("vocab"))


def write_image(path, colour):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)


def write_clevr(folder, split, n):
    """CLEVR v1.0's own files: questions/CLEVR_<split>_questions.json and its images."""
    questions = []
    for i in range(n):
        name = f"CLEVR_{split}_{i:06d}.png"
        questions.append(dict(image_index=i, program=[], question_index=i, image_filename=name,
                              question_family_index=0, split=split, answer="2",
                              question="How many cars are there?"))
        write_image(folder / "images" / split / name, (10, 10, 200))
    (folder / "questions").mkdir(parents=True, exist_ok=True)
    info = dict(split=split, license="Creative Commons Attribution (CC BY 4.0)", version="1.0",
                date="2/14/2017")
    json.dump(dict(info=info, questions=questions),
              open(folder / "questions" / f"CLEVR_{split}_questions.json", "w"))


@pytest.fixture(scope="module")
def vqa_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("vqa")
    ann = root / "annotations"
    ann.mkdir()
    vqa = [dict(question="What colour is the car?", answer=["red"] * 7 + ["blue"] * 3,
                image=f"train2014/{i}.jpg") for i in range(4)]
    json.dump(vqa, open(ann / "vqa_train.json", "w"))
    json.dump(vqa[:2], open(ann / "vqa_val.json", "w"))
    write_clevr(root / "clevr", "train", 3)
    write_clevr(root / "clevr", "val", 1)
    vg = [dict(dataset="vg", question="Is the car red?", answer="yes", image=f"image/{i}.jpg")
          for i in range(20)]
    json.dump(vg, open(ann / "vg_qa.json", "w"))
    for i in range(4):
        write_image(root / "coco" / "train2014" / f"{i}.jpg", (200, 10, 10))
    for i in range(20):
        write_image(root / "vg" / "image" / f"{i}.jpg", (10, 200, 10))
    return root


def test_vqa_sequence_reads_the_three_tasks_with_answer_weights(vqa_root, tok):
    bm = vqa_sequence(vqa_root, tok, image_size=32, normalization=None)
    assert [len(e.dataset) for e in bm.train_stream] == [4, 3, 18]
    assert [len(e.dataset) for e in bm.test_stream] == [2, 1, 2]  # VG: every 10th image tests
    item = bm.train_stream[0].dataset[0]
    assert item["pixel_values"].shape == (3, 32, 32)
    assert torch.allclose(item["pixel_values"][0], torch.full((32, 32), 200 / 255), atol=1e-6)
    assert torch.allclose(item["target_weights"], torch.tensor([0.7, 0.3]))
    assert len(item["references"]) == 10
    assert tok.decode(item["question"]) == "what colour is the car?"
    batch = bm.collate([item])
    assert batch["decoder_input_ids"].shape[0] == 2 and batch["target_owner"].tolist() == [0, 0]
    assert [e.task_label for e in bm.train_stream] == [0, 1, 2]
    clevr = bm.train_stream[1].dataset[2]
    assert clevr["references"] == ["2"] and clevr["target_weights"].tolist() == [1.0]
    assert torch.allclose(clevr["pixel_values"][2], torch.full((32, 32), 200 / 255), atol=1e-6)
    vg = bm.train_stream[2].dataset[0]
    assert vg["references"] == ["yes"]
    assert vg["target_weights"].tolist() == [pytest.approx(0.2)]  # BLIP's Visual Genome weight


def test_wrong_files_name_the_file_and_the_layout(tmp_path, tok):
    root = tmp_path / "wrong"
    (root / "annotations").mkdir(parents=True)
    (root / "clevr" / "questions").mkdir(parents=True)
    # a BLIP-style list where CLEVR's own questions file belongs
    blip_style = [dict(question="How many cars are there?", answer="2", image="a.png")]
    json.dump(blip_style, open(root / "clevr" / "questions" / "CLEVR_train_questions.json", "w"))
    with pytest.raises(DatasetLayoutError, match=r"CLEVR_train_questions.json is not a CLEVR "
                                                 r"v1.0 questions file(.|\n)*clevr/"):
        vqa_sequence(root, tok, tasks=("clevr",))
    json.dump(dict(questions=[dict(question="q?", image_filename="x.png")]),
              open(root / "clevr" / "questions" / "CLEVR_train_questions.json", "w"))
    with pytest.raises(DatasetLayoutError, match=r"entry 0(.|\n)*Expected layout"):
        vqa_sequence(root, tok, tasks=("clevr",))
    # CLEVR's questions file where BLIP's VQA v2 list belongs
    json.dump(dict(info={}, questions=[]), open(root / "annotations" / "vqa_train.json", "w"))
    with pytest.raises(DatasetLayoutError, match=r"vqa_train.json does not hold a JSON list"):
        vqa_sequence(root, tok, tasks=("vqa_v2",))
    json.dump([dict(question="Is it red?", image="x.jpg")], open(root / "annotations" / "vg_qa.json", "w"))
    with pytest.raises(DatasetLayoutError, match=r"vg_qa.json does not hold entries with "
                                                 r"\['question', 'answer', 'image'\]"):
        vqa_sequence(root, tok, tasks=("vg",))


def test_vqa_layout_errors_show_the_layout(tmp_path, vqa_root, tok):
    with pytest.raises(DatasetLayoutError, match="vqa_train.json"):
        vqa_sequence(tmp_path / "nowhere", tok)
    (tmp_path / "annotations").mkdir()
    with pytest.raises(DatasetLayoutError, match="Expected layout"):
        vqa_sequence(tmp_path, tok)
    with pytest.raises(ValueError, match="'purple'"):
        bad = tmp_path / "bad"
        (bad / "annotations").mkdir(parents=True)
        json.dump([dict(question="is it purple", answer=["no"], image="image/0.jpg")],
                  open(bad / "annotations" / "vg_qa.json", "w"))
        vqa_sequence(bad, tok, tasks=("vg",))


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    ann = root / "annotations"
    ann.mkdir()
    cats = [dict(id=i + 1, name=n) for i, n in enumerate(("book", "backpack", "car", "truck", "bottle", "dog"))]
    # image ids 1-12; classes by image: 1-4 car only, 5-6 truck only, 7 car + truck (left out),
    # 8-10 book only, 11 dog only (no class), 12 backpack only; bottle: 13 (test), ...
    objects = {1: ["car"], 2: ["car"], 3: ["car"], 4: ["car"], 5: ["truck"], 6: ["truck"],
               7: ["car", "truck"], 8: ["book"], 9: ["book"], 10: ["book"], 11: ["dog"],
               12: ["backpack"], 13: ["bottle"], 14: ["backpack"], 15: ["bottle"], 16: ["car"],
               17: ["truck"], 18: ["book"]}
    names = {c["name"]: c["id"] for c in cats}
    inst = dict(categories=cats, annotations=[dict(image_id=i, category_id=names[n])
                                              for i, ns in objects.items() for n in ns])
    json.dump(inst, open(ann / "instances_train2014.json", "w"))
    json.dump(dict(categories=cats, annotations=[]), open(ann / "instances_val2014.json", "w"))
    name = "train2014/COCO_train2014_{:012d}.jpg".format
    train = [dict(caption=f"A {n}, on the road.", image=name(i), image_id=f"coco_{i}")
             for i, ns in objects.items() if i <= 12 for n in ns[:1] for _ in range(2)]
    test = [dict(image=name(i), caption=[f"a {objects[i][0]}", f"the {objects[i][0]}"])
            for i in range(13, 19)]
    json.dump(train, open(ann / "coco_karpathy_train.json", "w"))
    json.dump(test, open(ann / "coco_karpathy_test.json", "w"))
    for i in objects:
        write_image(root / "coco" / name(i), (i * 10, 50, 50))
    return root, objects


def test_coco_class_tasks_are_exclusive_and_equal(coco_root, tok):
    root, objects = coco_root
    with pytest.raises(ValueError, match="bottle"):  # no training image shows only a bottle
        coco_class_captions(root, tok, image_size=32)
    with pytest.raises(ValueError, match=r"\['backpack,'\]"):  # not in the tiny vocabulary
        coco_class_captions(root, tok, image_size=32, classes=("car", "backpack"))
    bm = coco_class_captions(root, tok, image_size=32, classes=("car", "truck", "book"),
                             normalization=None)
    sizes = [len(e.dataset) for e in bm.train_stream]
    assert sizes == [2, 2, 2]  # truck has 2 exclusive images (7 has car and truck: left out)
    for t, cls in enumerate(("car", "truck", "book")):
        data = bm.train_stream[t].dataset
        for i in range(len(data)):
            assert data[i]["references"] == [f"A {cls}, on the road."] * 2  # raw, for COCO scores
            assert bm.tokenizer.decode(data[i]["targets"][0]) == f"a {cls}, on the road"
    assert [len(e.dataset) for e in bm.test_stream] == [1, 1, 1]
    assert len(bm.collate.spec.prompt) == 3 and bm.info["rule"].startswith("exclusive")


def test_real_streams_are_registered(vqa_root, tok):
    bm = make_benchmark("vqa_sequence", root=str(vqa_root), tokenizer=tok, image_size=32,
                        tasks=["clevr"])
    assert len(bm.train_stream) == 1
    with pytest.raises(ValueError, match="has no settings"):
        make_benchmark("scene_vqa", n_images=3)
    assert scene_tokenizer().bos_token == "[DEC]"
