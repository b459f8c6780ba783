"""Frame-index rules against the worked examples of the reference evaluator and pipeline."""

import random

import pytest

from videochat2.data.frame_indices import (
    SampleSpec,
    clip_bounds,
    fps_indices,
    official_mvbench_indices,
    parse_sample,
    segment_indices,
)


def test_official_rule_whole_video():
    assert official_mvbench_indices(16, fps=30.0, max_frame=299) == [
        9,
        28,
        46,
        65,
        84,
        102,
        121,
        140,
        159,
        177,
        196,
        215,
        233,
        252,
        271,
        289,
    ]


def test_official_rule_with_bound():
    assert official_mvbench_indices(8, fps=30.0, max_frame=299, bound=(2.0, 6.5)) == [
        68,
        85,
        102,
        119,
        136,
        152,
        169,
        186,
    ]


def test_official_rule_tvqa_frame_folder():
    # start = max(1, round(30.6)) = 31, end = min(round(77.1), 90) = 77, seg = 46/16.
    got = official_mvbench_indices(16, fps=3.0, max_frame=90, first_idx=1, bound=(10.2, 25.7))
    assert got == [32, 35, 38, 41, 44, 46, 49, 52, 55, 58, 61, 64, 66, 69, 72, 75]


def test_official_rule_short_clip_has_no_error():
    got = official_mvbench_indices(16, fps=30.0, max_frame=19)
    assert got == [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 17, 18]


def test_official_rule_rounds_half_to_even():
    # seg = 2.5: round(2.5) = 2 (half-up would give 3, i.e. index 4), then int() truncates.
    assert official_mvbench_indices(4, fps=1.0, max_frame=10) == [1, 3, 6, 9]


def test_official_rule_allows_duplicates_for_tiny_clips():
    assert official_mvbench_indices(8, fps=30.0, max_frame=3) == [0, 0, 1, 1, 2, 2, 2, 3]


def test_middle_rule_differs_from_official():
    assert segment_indices(4, 300, "middle") == [37, 112, 187, 262]
    assert official_mvbench_indices(4, fps=30.0, max_frame=299) == [37, 112, 187, 261]


def test_middle_pads_short_videos_with_last_index():
    assert segment_indices(6, 3, "middle") == [0, 1, 2, 2, 2, 2]


def test_rand_stays_inside_its_interval_and_is_seeded():
    a = segment_indices(8, 400, "rand", random.Random(0))
    assert a == segment_indices(8, 400, "rand", random.Random(0))
    for i, idx in enumerate(a):
        assert 50 * i <= idx < 50 * (i + 1) - 1


def test_rand_falls_back_to_sorted_subset_when_intervals_are_empty():
    got = segment_indices(4, 6, "rand", random.Random(1))
    assert got == sorted(got) and len(set(got)) == 4 and all(0 <= i < 6 for i in got)


def test_segment_rejects_unknown_mode():
    with pytest.raises(ValueError, match="'rand' or 'middle'"):
        segment_indices(4, 10, "fps1")


def test_fps_rule():
    assert fps_indices(300, video_fps=30.0, sample_fps=0.5) == [30, 90, 150, 210, 270]
    assert fps_indices(300, video_fps=30.0, sample_fps=1.0, max_num_frames=3) == [15, 45, 75]
    assert all(i < 31 for i in fps_indices(31, video_fps=10.0, sample_fps=4.0))


def test_clip_bounds_as_original_and_clipped_to_video():
    assert clip_bounds(2.0, 6.5, fps=30.0, vlen=300) == (60, 135)
    assert clip_bounds(9.0, 20.0, fps=30.0, vlen=300) == (270, 30)
    with pytest.raises(ValueError, match="after start"):
        clip_bounds(3.0, 3.0, fps=30.0, vlen=300)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("rand", SampleSpec("rand")),
        ("middle", SampleSpec("middle")),
        ("fps0.5", SampleSpec("fps", 0.5)),
        ("fps2", SampleSpec("fps", 2.0)),
    ],
)
def test_parse_sample(spec, expected):
    assert parse_sample(spec) == expected


@pytest.mark.parametrize("spec", ["uniform", "fps", "fps0", "fps-1", "Middle", "fps1x"])
def test_parse_sample_rejects(spec):
    with pytest.raises(ValueError, match="unknown frame sampling"):
        parse_sample(spec)
