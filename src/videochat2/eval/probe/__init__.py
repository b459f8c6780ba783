"""Linear probes of visual features: `clips` (labelled clips -> mean features), `classifier` (fit, score)."""
