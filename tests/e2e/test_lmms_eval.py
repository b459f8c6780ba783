"""The lmms-eval adapter against the small trained run: requests built as lmms-eval builds them (its
`Instance` where lmms-eval is installed, an object with the same `args` elsewhere), answered in order,
cut at `until`, and scored consistently with `ChatSession.choose`."""

from __future__ import annotations

import math
from importlib import util

import pytest

from benchmarks.lmms_eval_prompt import lmms_eval_text
from videochat2 import ChatSession
from videochat2.eval.mvbench.tasks import load_questions
from videochat2.integrations.lmms_adapter import LmmsAdapter, continuation_logprobs

pytestmark = pytest.mark.slow

# Forcing eight new tokens makes the answers long enough for an ordering or cutting mistake to show.
FORCED = {"max_new_tokens": 8, "min_new_tokens": 8, "temperature": 0, "do_sample": False}
TASK, SPLIT = "mvbench_embedded", "test"


class Request:
    """The part of lmms-eval's Instance that models read."""

    def __init__(self, *args):
        self.args = args


def request(*args):
    if util.find_spec("lmms_eval") is None:
        return Request(*args)
    from lmms_eval.api.instance import Instance

    meta = {"task": args[-2], "doc_id": args[-3], "repeats": 1}
    return Instance(request_type="generate_until", arguments=args, idx=0, metadata=meta)


def doc_to_visual(doc):
    return [doc["video"]]


@pytest.fixture(scope="module")
def questions(dirs):
    """One question from each of five tasks of the embedded benchmark."""
    by_task = {}
    for question in load_questions(dirs["data"] / "synthetic" / "mvbench"):
        by_task.setdefault(question.task, question)
    return list(by_task.values())[:5]


@pytest.fixture(scope="module")
def adapter(chained_run, questions) -> LmmsAdapter:
    model = LmmsAdapter(str(chained_run), device="cpu", batch_size=2)
    docs = [{"video": str(q.video), "question": q.question, "candidates": list(q.candidates)} for q in questions]
    model.task_dict = {TASK: {SPLIT: docs}}
    return model


def generation_requests(adapter, gen_kwargs, order):
    docs = adapter.task_dict[TASK][SPLIT]
    return [
        request(
            lmms_eval_text(docs[i]["question"], docs[i]["candidates"]), dict(gen_kwargs), doc_to_visual, i, TASK, SPLIT
        )
        for i in order
    ]


def test_generate_until_answers_each_request_in_order_as_if_asked_alone(adapter, questions):
    order = [3, 0, 4, 1, 2]
    texts = adapter.generate_until(generation_requests(adapter, FORCED, order))
    alone = [
        ChatSession(adapter.session.loaded, generation={"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False})
        .watch(questions[i].video)
        .ask(lmms_eval_text(questions[i].question, questions[i].candidates))
        for i in order
    ]
    assert texts == alone and len(set(texts)) > 1


def test_generate_until_stops_at_until(adapter):
    (text,) = adapter.generate_until(generation_requests(adapter, FORCED, [0]))
    stop = text.strip()[len(text.strip()) // 2]
    for until in (stop, [stop, "never in the answer"]):
        (cut,) = adapter.generate_until(generation_requests(adapter, {**FORCED, "until": until}, [0]))
        assert cut == text[: text.index(stop)]


def test_loglikelihood_of_the_letters_ranks_the_options_as_choose_does(adapter, questions):
    session = adapter.session
    for question in questions[:3]:
        choice = ChatSession(session.loaded).watch(question.video).choose(question.question, question.candidates)
        pixels = session.clip(question.video)[0]
        prompt = session.choice_prompt(question.question, question.candidates)
        letters = "ABCDE"[: len(question.candidates)]
        scored = [continuation_logprobs(session, pixels, [prompt], [letter])[0] for letter in letters]
        logprobs = [lp for lp, _ in scored]
        assert max(range(len(letters)), key=logprobs.__getitem__) == choice.index
        assert [greedy for _, greedy in scored].count(True) <= 1
        for i in range(1, len(letters)):
            expected = math.log(choice.probs[i] / choice.probs[0])
            assert logprobs[i] - logprobs[0] == pytest.approx(expected, abs=1e-3)


def test_loglikelihood_is_the_same_in_any_batch_and_takes_doc_to_target(adapter, questions):
    docs = adapter.task_dict[TASK][SPLIT]
    args = [
        (lmms_eval_text(d["question"], d["candidates"]), f" ({letter})", doc_to_visual, i, TASK, SPLIT)
        for i, d in enumerate(docs)
        for letter in "AB"
    ]
    batched = adapter.loglikelihood([Request(*a) for a in args])
    one_by_one = [adapter.loglikelihood([Request(*a)])[0] for a in args[::-1]][::-1]
    assert [g for _, g in batched] == [g for _, g in one_by_one]
    assert [lp for lp, _ in batched] == pytest.approx([lp for lp, _ in one_by_one], abs=1e-4)
    assert all(lp < 0 for lp, _ in batched) and len({round(lp, 4) for lp, _ in batched}) > 1
    by_target = adapter.loglikelihood([Request(args[0][0], lambda doc: " (A)", *args[0][2:])])
    assert by_target[0][0] == pytest.approx(batched[0][0], abs=1e-4)


def test_a_request_with_two_videos_is_refused(adapter):
    (req,) = generation_requests(adapter, FORCED, [0])
    two = Request(req.args[0], req.args[1], lambda doc: [doc["video"], doc["video"]], *req.args[3:])
    with pytest.raises(ValueError, match="one video or image file"):
        adapter.generate_until([two])
