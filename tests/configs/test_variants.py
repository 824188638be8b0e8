"""Config variants: ``path:a,b`` applies the named variants of a config file left to right."""

import importlib
import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from configs import dino_coco, neco_dinov2

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = [
    p.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
    for p in sorted(REPO.glob("configs/**/*.py"))
]
CONFIGS = [name for name in CONFIGS if hasattr(importlib.import_module(name), "get_config")]


def _applied(module, *names):
    """``module.get_config()`` with ``VARIANTS[name]`` applied by hand, in order."""
    c = module.get_config()
    for name in names:
        module.VARIANTS[name](c)
    return c.to_dict()


@pytest.mark.parametrize("name", CONFIGS)
def test_every_variant_builds_and_default_spellings_agree(name):
    module = importlib.import_module(name)
    assert module.VARIANTS
    default = module.get_config().to_dict()
    assert module.get_config("").to_dict() == default == module.get_config("default").to_dict()
    for variant in module.VARIANTS:
        assert module.get_config(variant).to_dict() == _applied(module, variant)


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_variant_fails_naming_the_known_ones(name):
    module = importlib.import_module(name)
    first = next(iter(module.VARIANTS))
    with pytest.raises(ValueError, match="unknown config variant 'nope'") as err:
        module.get_config(f"{first},nope")
    assert all(v in str(err.value) for v in module.VARIANTS)


def test_variants_compose_left_to_right():
    both = neco_dinov2.get_config("vitb14,paper")
    assert both.to_dict() == _applied(neco_dinov2, "vitb14", "paper")
    assert both.model.variant == "dinov2_vitb14_reg4" and both.crops.global_size == 224
    assert neco_dinov2.get_config(" vitb14 , paper ").to_dict() == both.to_dict()
    # later variants win: demo resets the crop sizes that paper set
    assert neco_dinov2.get_config("paper,demo").to_dict() == neco_dinov2.get_config("demo").to_dict()
    # smoke starts from demo
    for module in (dino_coco, neco_dinov2):
        assert module.get_config("demo,smoke").to_dict() == module.get_config("smoke").to_dict()


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # ml_collections' loader
def test_config_flag_passes_the_variants_through():
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values)
    values(["prog", f"--config={REPO}/configs/neco_dinov2.py:vitb14,paper"])
    assert values.config.to_dict() == neco_dinov2.get_config("vitb14,paper").to_dict()


def test_evaluate_config_from_file_passes_the_variants_through():
    from configs.eval import linear_voc
    from dense_jax.core.config_files import config_from_file

    config = config_from_file(f"{REPO}/configs/eval/linear_voc.py:demo,croc")
    assert config.to_dict() == _applied(linear_voc, "demo", "croc")
    assert config.linear.variant == "croc" and config.linear.epochs == 45 and config.data.name == "scenes"
