"""LightningDataModules for captions (stages 1-2), instructions (stage 3) and evaluation."""
