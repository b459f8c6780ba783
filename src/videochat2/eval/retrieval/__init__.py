"""Stage-1 text<->video retrieval: `metrics` (recalls, re-ranking) and `run` (encode a corpus, score it)."""
