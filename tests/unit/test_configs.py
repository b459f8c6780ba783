"""Every command line the README documents composes, with the values it promises."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from recipes.cli import quote_stage_overrides
from recipes.schema import register

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_train(overrides: list[str], config_name: str = "train"):
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=quote_stage_overrides(overrides), return_hydra_config=True)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The per-job override lists Hydra's basic sweeper makes from a `-m` command line."""
    parsed = OverridesParser.create().parse_overrides(quote_stage_overrides(overrides))
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def test_quote_stage_overrides():
    assert quote_stage_overrides(["stage=2", "model.num_query=64"]) == ["stage='2'", "model.num_query=64"]
    assert quote_stage_overrides(["stage=1,2"]) == ["stage='1','2'"]
    assert quote_stage_overrides(["x.stage=2", "stage=s"]) == ["x.stage=2", "stage=s"]


def test_default_is_stage_1():
    cfg = compose_train([])
    assert cfg.stage == 1
    assert cfg.model.num_query == 32
    assert cfg.module._target_ == "lightning_modules.AlignmentModule"
    assert cfg.hydra.run.dir == "outputs/default/stage1"


def test_stage_2_with_num_query():
    cfg = compose_train(["stage=2", "model.num_query=64"])
    assert cfg.stage == 2
    assert cfg.model.num_query == 64
    assert cfg.hydra.run.dir == "outputs/default/stage2"


def test_paths_move_outputs_and_data():
    cfg = compose_train(["paths.output_root=/tmp/o", "paths.data_dir=/tmp/d", "run_name=r"])
    assert cfg.hydra.run.dir == "/tmp/o/r/stage1"
    assert cfg.data.root == "/tmp/d/synthetic"


def test_stage_sweep_expands_to_two_jobs():
    jobs = sweep_jobs(["stage=1,2"])
    assert len(jobs) == 2
    stages = [compose_train(job).stage for job in jobs]
    assert stages == [1, 2]


def test_every_composed_config_resolves_except_runtime_paths():
    cfg = compose_train(["stage=2", "model.num_query=64"])
    cfg.paths.run_dir = "/tmp/run"
    with open_dict(cfg):
        del cfg["hydra"]
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["module"]["_target_"] == "lightning_modules.VideoChat2Module"


def ablation_jobs(name: str) -> list[list[str]]:
    """The jobs `python train.py -m experiment=<name>` launches: its sweeper params expanded."""
    cfg = compose_train([f"experiment={name}"])
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    return sweep_jobs([f"experiment={name}", *params])


def test_num_query_sweep_gives_three_jobs_in_separate_directories():
    jobs = sweep_jobs(["stage=3", "model.num_query=32,64,96"])
    cfgs = [compose_train(job) for job in jobs]
    assert [c.model.num_query for c in cfgs] == [32, 64, 96]
    assert all(c.stage == 3 for c in cfgs)


@pytest.mark.parametrize(
    "name, key, values",
    [
        ("ablation_extra_queries", "model.num_query", [32, 64, 96, 128]),
        ("ablation_qformer_instruction", "model.qformer_text_input", [True, False]),
        ("ablation_frames", "data.num_frames", [4, 8, 16]),
        ("ablation_lora", "model.llm.lora", [True, False]),
        (
            "ablation_frozen_encoders",
            "model.trainable",
            [
                ["vision_encoder", "vision_layernorm", "qformer", "query_tokens", "extra_query_tokens", "llm_proj"],
                ["query_tokens", "extra_query_tokens", "llm_proj"],
            ],
        ),
    ],
)
def test_ablation_sweeps(name, key, values):
    cfgs = [compose_train(job) for job in ablation_jobs(name)]
    swept = [OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(c, key)}))["v"] for c in cfgs]
    assert swept == values
    assert all(c.stage == 3 for c in cfgs)


@pytest.mark.parametrize("family", ["vicuna7b", "mistral7b", "phi3"])
@pytest.mark.parametrize("stage", [2, 3])
def test_paper_recipes_compose(family, stage):
    from recipes.train import model_spec

    cfg = compose_train([f"experiment=videochat2_{family}_stage{stage}", "paths.pretrained=/data/ckpt"])
    spec = model_spec(cfg)
    assert cfg.stage == spec.stage == stage
    assert spec.vision.embed_dim == 1024 and spec.qformer.hidden_size == 768
    assert spec.qformer_tokenizer == "/data/ckpt/bert-base-uncased" and spec.llm_tokenizer is None
    assert spec.llm.lora == (stage == 3) and spec.llm.path is None
    assert cfg.precision == "bf16-mixed"
    assert stage == 2 or cfg.model.lr_scale is None


def test_every_experiment_composes_under_train():
    names = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
    assert len(names) >= 11
    for name in names:
        cfg = compose_train([f"experiment={name}", "paths.pretrained=/data/ckpt"])
        assert cfg.stage in (1, 2, 3) and cfg.module._target_.startswith("lightning_modules.")


def test_slurm_command_line_composes():
    overrides = ["hydra/launcher=slurm", "stage=3", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=4"]
    cfg = compose_train(overrides)
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (4, 8, 8)
    assert cfg.trainer.strategy._target_.endswith("DDPStrategy")


@pytest.mark.parametrize(("trainer", "gpus"), [("ddp", 8), ("fsdp", 8), ("gpu", 8), ("ddp_cpu", None), ("cpu", None)])
def test_slurm_requests_gpus_only_for_gpu_trainer_presets(trainer, gpus):
    """A CPU preset submits to CPU nodes as it is: asking them for GPUs would leave the job pending forever."""
    cfg = compose_train(["hydra/launcher=slurm", f"trainer={trainer}", "trainer.devices=8", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, gpus)
    assert instantiate(launcher).params["gpus_per_node"] == gpus  # what submitit is handed


def test_slurm_gpus_follow_an_overridden_accelerator_and_an_explicit_count_wins():
    cfg = compose_train(["hydra/launcher=slurm", "trainer=ddp", "trainer.accelerator=cpu"])
    assert cfg.hydra.launcher.gpus_per_node is None
    cfg = compose_train(["hydra/launcher=slurm", "trainer=ddp_cpu", "trainer.accelerator=auto"])
    assert cfg.hydra.launcher.gpus_per_node == 2
    cfg = compose_train(["hydra/launcher=slurm", "trainer=ddp_cpu", "hydra.launcher.gpus_per_node=1"])
    assert cfg.hydra.launcher.gpus_per_node == 1


def test_component_presets_come_from_python_and_fields_override_them():
    from recipes.train import model_spec
    from videochat2.models.llm import LLMConfig
    from videochat2.models.qformer import QFormerConfig
    from videochat2.models.vision import VisionConfig

    spec = model_spec(compose_train(["stage=3"]))
    assert spec.vision == VisionConfig.tiny() and spec.llm.num_heads == LLMConfig.from_preset("tiny_llama").num_heads
    assert spec.qformer.hidden_size == QFormerConfig.tiny().hidden_size and spec.qformer.encoder_width == 128
    spec = model_spec(compose_train(["stage=3", "model.vision_encoder.checkpoint_num=2", "model.llm.lora_r=64"]))
    assert (spec.vision.checkpoint_num, spec.vision.depth, spec.llm.lora_r, spec.llm.lora) == (2, 5, 64, True)
    paper = model_spec(compose_train(["experiment=videochat2_vicuna7b_stage3"]))
    assert paper.vision == VisionConfig.umt_l16() and paper.llm.preset == "vicuna7b_v0"
    assert paper.qformer == QFormerConfig.bert_base(num_query_tokens=96)


def test_a_mistyped_or_unknown_component_field_fails_at_composition_with_its_key():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="model.vision_encoder.depth"):
        compose_train(["model.vision_encoder.depth=deep"])
    with pytest.raises(ConfigCompositionException, match="model.llm.lora_rank"):
        compose_train(["model.llm.lora_rank=8"])


def test_model_sizes_do_not_follow_the_data_settings():
    from recipes.train import model_spec

    small, large = (model_spec(compose_train(["stage=2", f"data.image_size={s}"])) for s in (64, 224))
    assert small.vision == large.vision and small.qformer == large.qformer


def documented_commands(script: str) -> list[list[str]]:
    """The override lists of every `python <script> ...` command the README and docs/ show (not shell templates)."""
    pages = [CONF.parent / "README.md", *sorted((CONF.parent / "docs").glob("*.md"))]
    text = "\n".join(page.read_text().replace("\\\n", " ") for page in pages)
    lines = re.findall(rf"`?python {script} ([^`\n#|]*)", text)
    return [shlex.split(line) for line in lines if "$" not in line]


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_every_command_the_docs_show_composes(script):
    commands = documented_commands(script)
    assert len(commands) >= 4
    for args in commands:
        jobs = sweep_jobs([a for a in args if a != "-m"]) if "-m" in args else [args]
        for job in jobs:
            compose_train(job, config_name=script.removesuffix(".py"))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.num_frames=abc", "full_key: data.num_frames"),
        ("data.batch_size=1.5", "full_key: data.batch_size"),
        ("data.hflip=maybe", "full_key: data.hflip"),
        ("data.read_timeout_s=soon", "full_key: data.read_timeout_s"),
    ],
)
@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_a_data_value_of_the_wrong_type_fails_at_composition_naming_the_key(override, key, config_name):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as failed:
        compose_train([override], config_name=config_name)
    assert key in str(failed.value.__cause__)


def test_typed_data_keys_keep_their_values_and_types():
    cfg = compose_train(["data.num_frames=6", "data.read_timeout_s=null"])
    assert (cfg.data.num_frames, cfg.data.read_timeout_s, cfg.data.crop_scale) == (6, None, [0.8, 1.0])
    assert isinstance(cfg.data.max_skip_fraction, float) and cfg.data.corpora.caption[0].name == "synthetic_video"
    paper = compose_train(["experiment=videochat2_vicuna7b_stage3"])
    assert paper.data.synthetic is None and paper.data.num_frames == 8
