"""Recipe tables onto dataclasses: types, nesting, and one-line errors for unknown keys and bad values."""

import tomllib
from dataclasses import dataclass, field

import pytest

from medm2g_core.errors import InputError
from medm2g_core.training.config_loading import from_dict, to_dict


@dataclass
class Inner:
    channels: tuple[int, ...] = (32, 64)
    clip: tuple[float, float] = (-1024.0, 2048.0)
    init: str | None = None


@dataclass
class Outer:
    name: str = "x"
    lr: float = 1e-4
    steps: int = 10
    ema: float | None = None
    inner: Inner = field(default_factory=Inner)


def test_nested_tables_and_types():
    text = 'name = "micro"\nlr = 1\nema = 0.99\n[inner]\nchannels = [8, 16, 32]\nclip = [-100, 100]\n'
    config = from_dict(Outer, tomllib.loads(text), "recipe")
    assert config == Outer(name="micro", lr=1.0, ema=0.99, inner=Inner(channels=(8, 16, 32), clip=(-100.0, 100.0)))
    assert to_dict(config)["inner"]["channels"] == (8, 16, 32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lrr = 1e-3", "recipe: unknown key 'lrr'"),
        ("steps = 1.5", "recipe.steps: expected int"),
        ("steps = true", "recipe.steps: expected int"),
        ("[inner]\nclip = [1, 2, 3]", "recipe.inner.clip: expected 2 values"),
        ("[inner]\nchanels = [1]", "recipe.inner: unknown key 'chanels'"),
        ("inner = 3", "recipe.inner: expected a table"),
        ("name = 5", "recipe.name: expected str"),
    ],
)
def test_bad_recipes_name_the_key(text, message):
    with pytest.raises(InputError) as info:
        from_dict(Outer, tomllib.loads(text), "recipe")
    assert message in str(info.value)
    assert "\n" not in str(info.value)
