"""LightningModules: thin glue between the videochat2 library and the Trainer."""

from lightning_modules.alignment import AlignmentModule
from lightning_modules.videochat2 import VideoChat2Module

__all__ = ["AlignmentModule", "VideoChat2Module"]
