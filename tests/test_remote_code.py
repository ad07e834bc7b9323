"""Checkpoints load through the Auto classes, with and without the gpt1 package installed."""

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import gpt1
from gpt1 import (
    GPT1ForCausalLM,
    GPT1ForMultipleChoice,
    GPT1ForQuestionAnswering,
    GPT1ForSequenceClassification,
    GPT1ForTokenClassification,
    GPT1Model,
)
from gpt1.model.configuration_gpt1 import GPT1_AUTO_MAP, SUPPORTED_TRANSFORMERS, _check_transformers_version

from .helpers import make_tokenizer, run_without_gpt1, tiny_config

ROOT = Path(__file__).resolve().parent.parent

HEADS = {
    "AutoModel": GPT1Model,
    "AutoModelForCausalLM": GPT1ForCausalLM,
    "AutoModelForSequenceClassification": GPT1ForSequenceClassification,
    "AutoModelForMultipleChoice": GPT1ForMultipleChoice,
    "AutoModelForTokenClassification": GPT1ForTokenClassification,
    "AutoModelForQuestionAnswering": GPT1ForQuestionAnswering,
}
IDS = [[5, 9, 17, 3, 8, 2], [6, 2, 1, 8, 40, 41]]


def first_output(outputs) -> torch.Tensor:
    """The logits, the start scores (question answering) or the hidden states (the bare model)."""
    return outputs[0]


def inputs_for(auto_class: str) -> torch.Tensor:
    ids = torch.tensor(IDS)
    return ids[None] if auto_class == "AutoModelForMultipleChoice" else ids


@pytest.mark.parametrize("auto_class", sorted(HEADS))
def test_save_writes_code_and_full_auto_map(tmp_path, auto_class):
    HEADS[auto_class](tiny_config()).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == GPT1_AUTO_MAP
    assert {"configuration_gpt1.py", "modeling_gpt1.py", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    assert not list(tmp_path.glob("*.bin"))


def test_remote_code_files_import_only_stdlib_torch_transformers_and_siblings(tmp_path):
    GPT1ForCausalLM(tiny_config()).save_pretrained(tmp_path)
    allowed = {"torch", "transformers", *sys.stdlib_module_names}  # what every machine that loads a model has
    for path in (tmp_path / "configuration_gpt1.py", tmp_path / "modeling_gpt1.py"):
        for line in path.read_text().splitlines():
            if line.startswith(("import ", "from ")):
                module = line.split()[1]
                assert module.startswith(".") or module.split(".")[0] in allowed, f"{path.name}: {line}"


def test_every_head_loads_without_gpt1_and_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(pad_token_id=0, num_labels=3)
    expected = {}
    for auto_class, head in HEADS.items():
        model = head(config).eval()
        folder = tmp_path / auto_class
        model.save_pretrained(folder)
        with torch.no_grad():
            expected[auto_class] = first_output(model(inputs_for(auto_class))).tolist()
    outputs = run_without_gpt1(
        """
        import torch, transformers
        config = transformers.AutoConfig.from_pretrained(INPUTS["root"] + "/AutoModel", trust_remote_code=True)
        OUTPUTS["config_class"] = type(config).__name__
        for auto_class in INPUTS["heads"]:
            model = getattr(transformers, auto_class).from_pretrained(
                INPUTS["root"] + "/" + auto_class, trust_remote_code=True).eval()
            ids = torch.tensor(INPUTS["ids"])
            if auto_class == "AutoModelForMultipleChoice":
                ids = ids[None]
            with torch.no_grad():
                out = model(ids)
            out = out[0]  # logits, start scores or hidden states
            OUTPUTS[auto_class] = {"class": type(model).__name__, "module": type(model).__module__,
                                   "values": out.tolist()}
        """,
        tmp_path,
        root=str(tmp_path),
        heads=sorted(HEADS),
        ids=IDS,
    )
    assert outputs["config_class"] == "GPT1Config"
    for auto_class, head in HEADS.items():
        loaded = outputs[auto_class]
        assert loaded["class"] == head.__name__
        assert loaded["module"].startswith("transformers_modules"), loaded["module"]
        # Same weights and code; only BLAS summation order may differ between processes.
        torch.testing.assert_close(
            torch.tensor(loaded["values"]), torch.tensor(expected[auto_class]), atol=1e-6, rtol=1e-5, msg=auto_class
        )


def test_pipeline_and_generate_without_gpt1(tmp_path):
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    model = GPT1ForCausalLM(tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    prompt = "The trophy"
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    expected = model.generate(ids, max_new_tokens=15, do_sample=False)
    outputs = run_without_gpt1(
        """
        from transformers import pipeline
        generator = pipeline("text-generation", model=INPUTS["folder"], trust_remote_code=True)
        result = generator(INPUTS["prompt"], max_new_tokens=15, do_sample=False)
        OUTPUTS["text"] = result[0]["generated_text"]
        OUTPUTS["class"] = type(generator.model).__name__
        """,
        tmp_path,
        folder=str(tmp_path / "lm"),
        prompt=prompt,
    )
    assert outputs["class"] == "GPT1ForCausalLM"
    assert outputs["text"] == tokenizer.decode(expected[0], skip_special_tokens=True)
    assert outputs["text"].startswith(prompt) and len(outputs["text"]) > len(prompt)


def test_installed_package_registers_auto_classes_without_trust_remote_code(tmp_path):
    assert gpt1.GPT1Config.model_type == "gpt1"
    for auto_class, head in HEADS.items():
        folder = tmp_path / auto_class
        head(tiny_config()).save_pretrained(folder)
        auto = {
            "AutoModel": AutoModel,
            "AutoModelForCausalLM": AutoModelForCausalLM,
            "AutoModelForSequenceClassification": AutoModelForSequenceClassification,
            "AutoModelForMultipleChoice": AutoModelForMultipleChoice,
            "AutoModelForTokenClassification": AutoModelForTokenClassification,
            "AutoModelForQuestionAnswering": AutoModelForQuestionAnswering,
        }[auto_class]
        model = auto.from_pretrained(folder)
        assert type(model) is head
    assert type(AutoConfig.for_model("gpt1", n_layer=1)) is gpt1.GPT1Config


@pytest.mark.parametrize(
    "first_import",
    [
        "import gpt1",  # before transformers: registration waits for transformers' Auto classes
        "from transformers import AutoModelForCausalLM",  # after them: registration happens at once
        "import transformers",  # transformers loaded, its Auto classes not yet
        "from gpt1 import GPT1ForCausalLM",  # the model code loads transformers' Auto classes itself
        "from gpt1.model.configuration_gpt1 import GPT1Config",
    ],
)
def test_import_gpt1_registers_the_auto_classes_in_any_import_order(tmp_path, first_import):
    GPT1ForCausalLM(tiny_config()).save_pretrained(tmp_path)
    program = f"""
import json, sys, warnings
warnings.simplefilter("error")  # a failed registration warns: make it fail the test
{first_import}
import gpt1
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
folder = sys.argv[1]
print(json.dumps([type(AutoConfig.from_pretrained(folder)).__name__, type(AutoModel.from_pretrained(folder)).__name__,
                  type(AutoModelForCausalLM.from_pretrained(folder)).__name__]))
"""
    result = subprocess.run([sys.executable, "-c", program, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == ["GPT1Config", "GPT1Model", "GPT1ForCausalLM"]


def test_import_gpt1_alone_loads_neither_torch_nor_transformers():
    program = "import sys, gpt1; print(sorted({'torch', 'transformers'} & {m.split('.')[0] for m in sys.modules}))"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    assert gpt1.__version__ and set(gpt1.__all__) <= set(dir(gpt1))
    for name in gpt1.__all__:
        assert getattr(gpt1, name) is not None


def test_an_unsupported_transformers_gets_a_message_naming_the_versions(tmp_path):
    """On a transformers older than the declared range, loading a folder says which versions work
    instead of failing on a name that release lacks."""
    GPT1ForCausalLM(tiny_config()).save_pretrained(tmp_path / "lm")
    outputs = run_without_gpt1(
        """
        import transformers
        transformers.__version__ = "5.3.0"  # as if that release were installed
        from transformers import AutoModelForCausalLM
        try:
            AutoModelForCausalLM.from_pretrained(INPUTS["folder"], trust_remote_code=True)
        except Exception as error:
            OUTPUTS["error"] = f"{type(error).__name__}: {error}"
        """,
        tmp_path,
        folder=str(tmp_path / "lm"),
    )
    assert outputs["error"].startswith("ImportError: This gpt1 model's code needs transformers>=5.4,<6")
    assert "transformers 5.3.0 is installed" in outputs["error"]


def test_the_remote_codes_version_check_matches_the_declared_range():
    declared = re.search(r'"(transformers>=[\w.]+,<[\w.]+)"', (ROOT / "pyproject.toml").read_text())
    assert declared is not None and declared.group(1) == SUPPORTED_TRANSFORMERS
    with pytest.warns(UserWarning, match=r"tested with transformers>=5.4,<6; transformers 6.1.0 is not in that"):
        _check_transformers_version("6.1.0")
    with pytest.warns(UserWarning, match=r"transformers main-branch is not in that range"):
        _check_transformers_version("main-branch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_transformers_version("5.4.0")  # in range: silent
        _check_transformers_version("5.24.0")
    with pytest.raises(ImportError, match=r"needs transformers>=5.4,<6, but transformers 4.57.1 is installed"):
        _check_transformers_version("4.57.1")
