"""Data: readers, frame sampling, transforms, annotation formats."""
