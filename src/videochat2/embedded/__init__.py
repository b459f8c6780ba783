"""The embedded default: a procedural temporal video world, and a tiny LLM pretrained on its text.

MVBench makes static tasks temporal ("is the man on stage?" becomes "which way does he move?"). This world
is built so that holds by construction: a few big, high-contrast shapes in a few colours on a dark
background, and events over time (moving in a direction with wrap-around, flashing N times, appearing
for a while, changing colour or disappearing, characters shown one after another, a scene cut, several
objects moving). The frame a one-frame model sees (the middle one) is uninformative for every task, the
answer vocabularies are balanced, and every question type of the benchmark also appears, on other clips,
in the stage-3 instruction data, so a tiny model can learn the whole pipeline on a CPU in minutes.

Layout under the root returned by :func:`build` (all media paths in annotation files are relative:
``video`` to ``<root>/videos/``, ``image`` to ``<root>/images/``; MVBench items to
``<root>/mvbench/video/<prefix>``)::

    videos/train/*.mp4, videos/retrieval/*.mp4    H.264 clips (8 fps; the frame-task clips 3 fps)
    images/*.jpg                                   still scenes for the image branch
    annotations/pretrain_video.json                [{"video", "caption"}]          stages 1-2
    annotations/pretrain_image.json                [{"image", "caption"}]
    annotations/instruction_video.json             [{"video", "QA": [{"i", "q", "a"}], ["start", "end"]}]
    annotations/instruction_video_mc.json          [{"video", "question", "candidates", "answer"[, "start", "end"]}]
    annotations/instruction_image.json             [{"image", "QA": [{"i", "q", "a"}]}]
    annotations/instruction_image_mc.json          [{"image", "question", "candidates", "answer"}]
    annotations/retrieval_test.json                [{"video", "caption"}]          held-out clips
    annotations/events.json                        ground truth of every clip, paths relative to the root
    mvbench/tasks.json                             see below
    mvbench/json/<task>.json                       [{"video", "question", "candidates", "answer"[, "start", "end"]}]
    mvbench/video/<prefix><name>.mp4 | <name>/00001.jpg ...   media (frame folders at 3 fps)
    tokenizers/qformer/, tokenizers/llm/           Hugging Face tokenizers trained on this corpus
    MANIFEST.json                                  seed, version, settings, counts, sha256 of every file
    splits/train/, splits/heldout/                 written on first use: the trained multiple-choice
                                                   items, and new training-like clips (see `splits`)

``mvbench/tasks.json`` maps a task name to how to read it, as the official evaluator's task list does::

    {"<task>": {"json": "<task>.json", "prefix": "<folder>/", "media_type": "video" | "frame",
                "bound": <bool: items carry start/end in seconds>, "abbr": "<XY>"}}

Multiple-choice instruction items are MVBench items of training clips (``*_mc.json``, the benchmark's own
item format), so training renders them in the benchmark's prompt and re-orders their options. Training,
retrieval and benchmark clips come from disjoint seed streams. Same seed and settings give byte-identical
files (single-threaded x264 with fixed options), so the manifest's checksums are reproducible.

One module per job, in the order a build uses them: `world` (the vocabulary and a clip's state), `tasks`
(the nine benchmark tasks), `render` (frames and media files), `captions`, `jobs` (one clip per worker
process), `annotations` (the video annotation files), `images` (still scenes), `tokenizers`, `build` (the
cached build and its command line, `python -m videochat2.embedded --out DIR`), `llm` (the tiny LLM's
pretraining), `prepare` (the build and the pretraining, done once however many processes ask) and `splits`
(the training items and held-out clips as benchmarks, to tell where a model at chance fails). Names
with a leading underscore are shared between these modules only.
"""
