"""The transformers face of an export directory: `VideoChat2ForConditionalGeneration.from_pretrained(dir)`.

    from videochat2.hf import VideoChat2ForConditionalGeneration
    model = VideoChat2ForConditionalGeneration.from_pretrained("exported/", device="cpu")
    model.chat().watch("clip.mp4").ask("What happens first?")

The weights load through `load_model`, so the rules are the package's: local files only (a base LLM named by
a Hub id is read from the local cache), no repository code (`trust_remote_code` is never needed: importing
this module registers `VideoChat2Config` with `AutoConfig`), and every key accounted for. `save_pretrained`
writes an export directory, and `push_to_hub` uploads one with its model card (see docs/api.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from videochat2.builder import LoadedModel
from videochat2.chat import ChatSession
from videochat2.checkpoints import EXPORT_CONFIG
from videochat2.export import MODEL_TYPE, write_export
from videochat2.loader import load_model
from videochat2.spec import ModelSpec


class VideoChat2Config(PretrainedConfig):
    """An export's config.json as transformers reads it; `spec` is the model it describes."""

    model_type = MODEL_TYPE

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_json(self.to_dict())


class VideoChat2ForConditionalGeneration(PreTrainedModel):
    """A loaded VideoChat2 (`self.videochat2`) with the transformers entry points.

    It is made by `from_pretrained` only: the weights are spread over the export's files, not one
    state dict transformers could fill.
    """

    config_class = VideoChat2Config
    base_model_prefix = "videochat2"
    main_input_name = "pixel_values"

    def __init__(self, config: VideoChat2Config, loaded: LoadedModel | None = None) -> None:
        if loaded is None:
            raise ValueError("build it with VideoChat2ForConditionalGeneration.from_pretrained(<export directory>)")
        super().__init__(config)
        self.loaded = loaded
        self.videochat2 = loaded.model

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        device: str = "cpu",
        precision: str = "auto",
        load_4bit: bool = False,
        trust_checkpoint: bool = False,
        trust_remote_code: bool = False,
        **unused: Any,
    ) -> VideoChat2ForConditionalGeneration:
        """The model of a local export directory (`python -m videochat2.export`), on `device`.

        Hub-download arguments (`revision`, `token`, ...) are accepted and ignored: nothing is fetched.
        """
        directory = Path(pretrained_model_name_or_path)
        if not (directory / EXPORT_CONFIG).is_file():
            raise FileNotFoundError(
                f"{directory}: not an export directory (no {EXPORT_CONFIG}); nothing is downloaded, so download "
                "a Hub model first (`hf download <id> --local-dir <dir>`) or export a run (python -m videochat2.export)"
            )
        loaded = load_model(
            directory,
            device=device,
            precision=precision,
            trust_checkpoint=trust_checkpoint,
            trust_remote_code=trust_remote_code,
            quantization="nf4" if load_4bit else None,
        )
        return cls(VideoChat2Config.from_pretrained(directory), loaded)

    def forward(self, **inputs: Any) -> dict:
        """The training forward (loss on the answer tokens); see `videochat2.models.videochat2.VideoChat2`."""
        return self.videochat2(**inputs)

    def generate(self, **inputs: Any):
        """Continuation token ids of each prompt (`VideoChat2.generate`): visual tokens spliced into the LLM's."""
        return self.videochat2.generate(**inputs)

    def chat(self, **generation: Any) -> ChatSession:
        """A `ChatSession` on this model: `watch(media)`, then `ask`, `choose` or `answer_batch`."""
        return ChatSession(self.loaded, generation=generation)

    def save_pretrained(self, save_directory: str | Path, merge_lora: bool = False, **unused: Any) -> None:
        """Write an export directory (weights, tokenizers, config.json, model card); transformers' sharding
        and serialisation arguments do not apply to its fixed layout and are ignored."""
        write_export(self.loaded, save_directory, merge_lora=merge_lora)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | None = None, **unused) -> str:
        """Upload the export with its own model card (transformers' would replace README.md); returns the URL."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return str(api.upload_folder(folder_path=folder, repo_id=repo, commit_message="Upload VideoChat2"))


AutoConfig.register(MODEL_TYPE, VideoChat2Config)
