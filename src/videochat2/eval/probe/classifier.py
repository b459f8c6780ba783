"""Linear probes of visual features: does a task's answer reach the tokens the LLM reads?

A benchmark score mixes two failures: the encoder not seeing what a question asks, and the Q-Former,
projection and LLM not reading what the encoder saw. A probe tells them apart. For each task, a linear
classifier from the mean of a clip's features to its answer is fitted on most of the task's labelled
clips and scored on the rest. Where the probe finds the answer and the benchmark does not, the bridge
is what fails; where the probe is at chance, no later stage can answer. The mean is a lower bound on
what the features carry (it discards which token holds what), and it is the same readout at every stage.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def split_indices(indices: Sequence[int], train_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded shuffle of `indices`, cut into (train, test); the same seed gives the same split."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie strictly between 0 and 1, got {train_fraction}")
    order = list(indices)
    random.Random(seed).shuffle(order)
    cut = min(max(1, round(train_fraction * len(order))), len(order) - 1)
    return order[:cut], order[cut:]


def fit_probe(
    x: Tensor, y: Tensor, num_classes: int, steps: int = 300, lr: float = 0.05, l2: float = 1e-3
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Multinomial logistic regression on standardised features, full batch (a convex problem).

    Returns (weight, bias, mean, std); the features are standardised with the training statistics, so a
    feature's scale does not decide how strongly the L2 penalty holds it back.
    """
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(z @ weight + bias, y) + l2 * weight.pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return weight.detach(), bias.detach(), mean, std


def probe_accuracy(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, num_classes: int) -> float:
    weight, bias, mean, std = fit_probe(x_train, y_train, num_classes)
    predicted = (((x_test - mean) / std) @ weight + bias).argmax(1)
    return (predicted == y_test).float().mean().item()


def probe_tasks(
    features: dict[str, Tensor],
    tasks: Sequence[str],
    labels: Sequence[str],
    train_fraction: float = 0.75,
    max_classes: int = 32,
    seed: int = 0,
) -> dict:
    """Per task: probe accuracy of each feature set, beside the majority-class baseline.

    `features` maps a name to [N, D] (one row per clip), `tasks` and `labels` give each clip's task and
    answer. A task is skipped, with its reason, when it has a single answer, or more than `max_classes`
    or more than half as many as it has clips (an open answer set, such as orderings: too few repeats to
    learn from).
    """
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, task in enumerate(tasks):
        by_task[task].append(i)
    results, skipped = {}, {}
    for task, indices in sorted(by_task.items()):
        classes = sorted({labels[i] for i in indices})
        if not 2 <= len(classes) <= min(max_classes, len(indices) / 2):
            skipped[task] = (
                f"{len(classes)} distinct answers for {len(indices)} clips (probed: 2 to "
                f"{max_classes}, and at most half as many as clips)"
            )
            continue
        train, test = split_indices(indices, train_fraction, seed)
        index = {label: k for k, label in enumerate(classes)}
        y_train, y_test = (torch.tensor([index[labels[i]] for i in part]) for part in (train, test))
        majority = Counter(y_train.tolist()).most_common(1)[0][0]
        row = {
            "n_train": len(train),
            "n_test": len(test),
            "classes": len(classes),
            "majority": round(100 * (y_test == majority).float().mean().item(), 1),
        }
        for name, x in features.items():
            acc = probe_accuracy(x[train], y_train, x[test], y_test, len(classes))
            row[name] = round(100 * acc, 1)
        results[task] = row
    return {"tasks": results, "skipped": skipped, "macro": macro(results, [*features, "majority"])}


def macro(results: dict[str, dict], keys: Sequence[str]) -> dict[str, float]:
    """Mean over the probed tasks of each accuracy column."""
    if not results:
        return {key: 0.0 for key in keys}
    return {key: round(sum(row[key] for row in results.values()) / len(results), 1) for key in keys}


def format_probe(probed: dict) -> str:
    """Per task: classes, test clips, and the accuracy of majority / ViT / visual-token probes; then the macro."""
    columns = ["classes", "n_test", "majority", "vit", "visual_tokens"]
    lines = [f"{'task':<22}" + "".join(f"{c:>14}" for c in columns)]
    lines += [f"{task:<22}" + "".join(f"{row[c]:>14}" for c in columns) for task, row in probed["tasks"].items()]
    lines.append(f"{'macro':<22}{'':>28}" + "".join(f"{probed['macro'][c]:>14}" for c in columns[2:]))
    lines += [f"skipped {task}: {reason}" for task, reason in probed["skipped"].items()]
    return "\n".join(lines)
