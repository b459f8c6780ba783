"""Captions of clips and still scenes, phrased from varied templates, and the prompts that ask for them.

A clip's caption is its setting, then its events in temporal order.
"""

from __future__ import annotations

import random

from videochat2.embedded.world import DIRECTION_WORDS, Clip

CAPTION_PROMPTS = (
    "Describe the following video concisely.",
    "Describe the video in detail.",
    "What happens in this video?",
    "Summarize the events of the video in order.",
)
IMAGE_PROMPTS = ("Describe the following image concisely.", "Describe the image in detail.", "What is in this image?")


def _event_sentence(event: dict, rng: random.Random) -> str | None:
    kind, obj = event["type"], event.get("object")
    options = {
        "background": [f"the background is {event.get('scene')}", f"the scene is {event.get('scene')}"],
        "static": [f"a {obj} stays still", f"a {obj} rests in place", f"a {obj} does not move"],
        "move": [
            f"the {obj} moves {DIRECTION_WORDS.get(event.get('direction'), '')}",
            f"the {obj} keeps moving {DIRECTION_WORDS.get(event.get('direction'), '')}",
            f"the {obj} travels {DIRECTION_WORDS.get(event.get('direction'), '')}",
        ],
        "slide": [
            f"the {obj} slides {DIRECTION_WORDS.get(event.get('direction'), '')}",
            f"the {obj} shifts {DIRECTION_WORDS.get(event.get('direction'), '')}",
        ],
        "flash": [f"the {obj} flashes {event.get('count')}", f"the {obj} blinks {event.get('count')}"],
        "transient": [f"a {obj} appears and then disappears", f"a {obj} shows up for a while and goes away"],
        "disappear": [f"the {obj} disappears", f"the {obj} vanishes"],
        "colour_change": [
            f"the {event.get('shape')} turns from {event.get('from')} to {event.get('to')}",
            f"the {event.get('shape')} changes colour from {event.get('from')} to {event.get('to')}",
        ],
        "char": [f"the character {event.get('char')} is shown", f"the screen shows {event.get('char')}"],
        "scene_change": [
            f"the scene changes from {event.get('from')} to {event.get('to')}",
            f"the scene cuts from {event.get('from')} to {event.get('to')}",
        ],
    }
    return rng.choice(options[kind])


def _sentence_case(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def caption(clip: Clip, rng: random.Random) -> str:
    """The setting, then the clip's events in temporal order, phrased from varied templates."""
    setting = [e for e in clip.events if e["type"] in ("background", "static")]
    happenings = sorted((e for e in clip.events if e not in setting), key=lambda e: e["start"])
    parts = [_sentence_case(", ".join(_event_sentence(e, rng) for e in setting))] if setting else []
    steps = [_event_sentence(e, rng) for e in happenings]
    if len(steps) > 1:
        steps = [f"{rng.choice(('first', 'at first', 'to begin with'))} {steps[0]}"] + [
            f"{rng.choice(('then', 'after that', 'next', 'later'))} {s}" for s in steps[1:]
        ]
    if steps:
        parts.append(_sentence_case(", ".join(steps)))
    return " ".join(parts)


def still_caption(objects: list[tuple[str, str]], scene: str, rng: random.Random) -> str:
    names = [f"a {c} {s}" for s, c in objects]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    text = rng.choice(
        [
            f"{listed} on a {scene} background",
            f"a {scene} background with {listed}",
            f"{listed} in front of a {scene} backdrop",
        ]
    )
    return text[0].upper() + text[1:] + "."
