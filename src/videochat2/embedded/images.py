"""Still scenes for the image branch: JPEG files, their captions and their colour and shape questions."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image

from videochat2.data import qa_generation as qa
from videochat2.embedded.annotations import _open_answer
from videochat2.embedded.captions import IMAGE_PROMPTS, still_caption
from videochat2.embedded.jobs import _seed
from videochat2.embedded.render import render
from videochat2.embedded.world import COLOURS, SCENES, SHAPES, Clip, _objects, _positions, _track

IMAGE_TASKS = (
    qa.Task(
        "image_colour",
        ("What colour is the {shape}?", "Which colour does the {shape} have?"),
        qa.fixed_vocabulary(tuple(COLOURS)),
        4,
    ),
    qa.Task(
        "image_shape",
        ("What shape is the {colour} object?", "Which shape has the colour {colour}?"),
        qa.fixed_vocabulary(SHAPES),
        4,
    ),
)


def _write_images(root: Path, settings: dict) -> tuple[list[dict], tuple[list[dict], list[dict]]]:
    """Still scenes: captions for pretraining and colour/shape questions for instruction tuning."""
    captions, records = [], []
    for i in range(settings["images"]):
        rng = np.random.default_rng(list(_seed(settings["seed"], "image", "moving_direction", i)))
        objs = _objects(rng, int(rng.integers(1, 4)))
        clip = Clip("image", 1, [str(rng.choice(list(SCENES)))], [], [None], [], "")
        clip.tracks = [_track(s, c, p, 1) for (s, c), p in zip(objs, _positions(rng, len(objs), settings["size"]))]
        name = f"img_{i:05d}.jpg"
        Image.fromarray(render(clip, settings["size"])[0]).save(root / "images" / name, quality=95)
        text_rng = random.Random(i + settings["seed"] * 100003)
        captions.append({"image": name, "caption": still_caption(objs, clip.background[0], text_rng)})
        shape, colour = objs[0]
        records.append(
            {"video": name, "label": colour, "shape": shape, "colour": colour, "caption": captions[-1]["caption"]}
        )
    return captions, _image_instructions(records, settings["seed"])


def _image_instructions(records: list[dict], seed: int) -> tuple[list[dict], list[dict]]:
    """Per image: an open record (caption + one question) and the other question as a multiple-choice item."""
    rng = random.Random(seed)
    colour_items, _ = qa.build_items(records, IMAGE_TASKS[0], seed=seed)
    shape_items, _ = qa.build_items([{**r, "label": r["shape"]} for r in records], IMAGE_TASKS[1], seed=seed)
    open_records, choices = [], []
    for record, c_item, s_item in zip(records, colour_items, shape_items):
        item = c_item if rng.random() < 0.5 else s_item
        other = s_item if item is c_item else c_item
        choices.append({"image": record["video"], **{k: item[k] for k in ("question", "candidates", "answer")}})
        open_qa = [
            {"i": "", "q": rng.choice(IMAGE_PROMPTS), "a": record["caption"]},
            {"i": "", "q": other["question"], "a": _open_answer(other["answer"])},
        ]
        open_records.append({"image": record["video"], "QA": open_qa})
    return open_records, choices
