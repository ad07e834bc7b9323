"""The attention explorer: what it records, what the page holds, and (in headless Chromium) what it draws."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt1 import GPT1ForCausalLM, GPT1ForSequenceClassification
from gpt1.explorer import WEIGHT_SCALE, attention_html, head_summaries, record_attention

from .helpers import gpt1_cli, make_tokenizer, tiny_config

TROPHY = "The trophy didn't fit in the suitcase because it was too big."
TASK_FORMAT = "<|start|>The trophy didn't fit in the suitcase<|delimiter|>because it was too big<|classify|>"


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def tiny_model(tokenizer, seed: int = 0, model_class=GPT1ForCausalLM) -> GPT1ForCausalLM:
    torch.manual_seed(seed)
    config = tiny_config(
        vocab_size=len(tokenizer), n_positions=128, pad_token_id=tokenizer.pad_token_id, initializer_range=0.2
    )
    return model_class(config).eval()


def ids_of(tokenizer, text: str) -> torch.Tensor:
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


# --- what is recorded ----------------------------------------------------------------------------------


def test_the_record_holds_the_models_weights_and_the_vectors_that_make_them(tokenizer):
    model = tiny_model(tokenizer)
    ids = ids_of(tokenizer, TROPHY)
    head_inputs = []  # what the output projection receives: every head's weighted sum of values
    hooks = [
        block.attn.out_proj.register_forward_pre_hook(lambda _module, args: head_inputs.append(args[0][0]))
        for block in model.transformer.blocks
    ]
    model.set_attn_implementation("eager")  # the one implementation that returns the weights
    with torch.no_grad():
        reference = model(ids, output_attentions=True)
    for hook in hooks:
        hook.remove()
    model.set_attn_implementation("sdpa")
    record = record_attention(model, ids)
    assert model.config._attn_implementation == "sdpa"  # switched back after recording
    torch.testing.assert_close(record.weights, torch.stack([layer[0] for layer in reference.attentions]))
    torch.testing.assert_close(record.head_outputs(), torch.stack(head_inputs), atol=1e-5, rtol=1e-5)
    # softmax(q·kᵀ/√d) from the recorded vectors is the recorded weights: the page's step-by-step arithmetic.
    d = record.head_dim
    query, key = record.queries[1, :, d : 2 * d], record.keys[1, :, d : 2 * d]  # layer 1, head 1
    scores = (query @ key.T) * d**-0.5
    scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(scores.softmax(-1), record.weights[1, 1], atol=1e-6, rtol=1e-5)


def test_a_task_heads_base_model_is_what_is_recorded(tokenizer):
    classifier = tiny_model(tokenizer, model_class=GPT1ForSequenceClassification)
    classifier.set_attn_implementation("eager")
    ids = ids_of(tokenizer, TASK_FORMAT)
    with torch.no_grad():
        attentions = classifier.transformer(ids, output_attentions=True).attentions
    torch.testing.assert_close(record_attention(classifier, ids).weights, torch.stack([a[0] for a in attentions]))


def test_head_summaries_name_the_pattern_of_a_head():
    tokens = 6
    previous = torch.zeros(tokens, tokens)
    previous[0, 0] = 1.0
    previous[torch.arange(1, tokens), torch.arange(tokens - 1)] = 1.0  # every query on the token before it
    uniform = torch.tril(torch.ones(tokens, tokens))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    sink = torch.zeros(tokens, tokens)
    sink[:, 0] = 1.0
    weights = torch.stack([previous, uniform, sink])[None]  # one layer, three heads
    token_ids = [5, 7, 9, 5, 7, 9]  # repeats: positions 3, 4, 5 have earlier occurrences at 0, 1, 2
    scores = head_summaries(weights, token_ids)
    assert scores["previous"][0] == [1.0, pytest.approx(np.mean([1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6]), abs=1e-6), 0.2]
    assert scores["first"][0][2] == 1.0 and scores["entropy"][0][0] == 0.0 and scores["entropy"][0][2] == 0.0
    uniform_entropy = np.mean([np.log2(n) for n in range(2, tokens + 1)])
    assert scores["entropy"][0][1] == pytest.approx(uniform_entropy, abs=1e-5)
    # Induction: query 3 (a 5) should look at position 1 (after the earlier 5), query 4 at 2, query 5 at 3.
    induction = torch.zeros(tokens, tokens)
    induction[:3] = previous[:3]
    induction[3, 1] = induction[4, 2] = induction[5, 3] = 1.0
    assert head_summaries(induction[None, None], token_ids)["induction"][0][0] == 1.0
    assert scores["induction"][0][0] == 0.0  # the previous-token head looks one short
    assert head_summaries(weights, [1, 2, 3, 4, 5, 6])["induction"] == [[None, None, None]]  # nothing repeats


# --- what the page holds -------------------------------------------------------------------------------


def page_data(page: str) -> dict:
    match = re.search(r'<script id="explorer-data" type="application/json">(.*?)</script>', page, re.DOTALL)
    assert match is not None
    return json.loads(match.group(1))


def unpacked(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=dtype)


def test_the_page_is_self_contained_and_carries_the_weights_to_four_decimals(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    explorer = attention_html(model, tokenizer, TASK_FORMAT + "</script><!--")
    page = explorer.html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing is fetched
    assert "/*SCRIPT*/" not in page and "/*DATA*/" not in page and "window.gpt1Explorer" in page
    assert page.count("</script>") == 2  # the data's own "</script>" is escaped
    data = page_data(page)
    tokens = len(data["tokens"])
    assert data["kinds"][0] == "start" and "delimiter" in data["kinds"] and "classify" in data["kinds"]
    assert data["segments"][0] == 0 and data["segments"][-1] == 1
    stored = unpacked(data["models"][0]["weights"], "<u2").astype(np.float64) / WEIGHT_SCALE
    rows, columns = np.tril_indices(tokens)
    expected = explorer.records[0].weights.numpy()[..., rows, columns].reshape(-1)
    assert np.abs(stored - expected).max() <= 0.5 / WEIGHT_SCALE + 1e-9
    vectors = unpacked(data["models"][0]["vectors"], "<f4").reshape(2, 3, tokens, -1)
    np.testing.assert_array_equal(vectors[1, 2], explorer.records[0].values[1].numpy())

    assert explorer.save(tmp_path / "explorer.html").read_text(encoding="utf-8") == page
    with pytest.raises(ValueError, match=r"give a path ending in \.html, got '.*explorer\.png'"):
        explorer.save(tmp_path / "explorer.png")
    assert explorer._repr_html_().startswith("<iframe srcdoc=") and "&lt;script" in explorer._repr_html_()


def test_bad_inputs_to_the_explorer_are_named(tokenizer):
    model = tiny_model(tokenizer)
    with pytest.raises(ValueError, match="has no tokens"):
        attention_html(model, tokenizer, "")
    with pytest.raises(ValueError, match=r"more than the context of 'model' \(128 tokens\): shorten it"):
        attention_html(model, tokenizer, "the trophy " * 100)
    other = make_tokenizer(vocab_size=280)
    with pytest.raises(ValueError, match="tokenizers split the text differently"):
        attention_html(model, tokenizer, TROPHY, compare=tiny_model(tokenizer, seed=1), compare_tokenizer=other)
    small = GPT1ForCausalLM(tiny_config(vocab_size=50)).eval()
    with pytest.raises(ValueError, match="has vocab_size 50: pass the tokenizer saved with the model"):
        attention_html(small, tokenizer, TROPHY)


def test_cli_writes_the_explorer_and_compares_two_folders(tokenizer, tmp_path):
    for name, seed in (("pretrained", 0), ("tuned", 1)):
        tiny_model(tokenizer, seed=seed).save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    out = tmp_path / "views" / "trophy.html"
    result = gpt1_cli(
        "attention", TROPHY, "--model", str(tmp_path / "pretrained"), "--compare", str(tmp_path / "tuned"),
        "--html", str(out),
    )  # fmt: skip
    assert f"Wrote {out}" in result.stdout and "open it in a browser" in result.stdout
    data = page_data(out.read_text(encoding="utf-8"))
    assert [entry["name"] for entry in data["models"]] == [str(tmp_path / "pretrained"), str(tmp_path / "tuned")]
    refused = gpt1_cli("attention", TROPHY, "--model", str(tmp_path / "pretrained"), "--compare", "x", check=False)
    assert refused.returncode == 2 and "--compare works with the HTML explorer" in refused.stderr


# --- in a real browser ---------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
]  # fmt: skip


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "needs Chromium and its driver (Debian: apt-get install chromium chromium-driver; .ci/run installs them)"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must never try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def open_page(browser, path: Path) -> float:
    """Open the page and wait for the explorer to decode its data and draw; returns the seconds it took."""
    started = time.perf_counter()
    browser.get(path.as_uri())
    error = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.gpt1Explorer.ready.then(() => done(null), (error) => done(String(error)));"
    )
    assert error is None, error
    return time.perf_counter() - started


def console_problems(browser) -> list[dict]:
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]


def click(browser, element, x: float, y: float) -> None:
    """A real mouse click at (x, y) from the element's top-left corner."""
    from selenium.webdriver.common.action_chains import ActionChains

    size = element.size
    offset = (x - size["width"] / 2, y - size["height"] / 2)  # Selenium measures from the element's centre
    ActionChains(browser).move_to_element_with_offset(element, *offset).click().perform()


def show(browser, view: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'#tabs button[data-view="{view}"]').click()


def test_in_chromium_a_clicked_token_shows_the_models_own_attention(browser, tokenizer, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    pretrained, tuned = tiny_model(tokenizer, seed=0), tiny_model(tokenizer, seed=1)
    explorer = attention_html(pretrained, tokenizer, TASK_FORMAT, compare=tuned, names=("pretrained", "<i>tuned</i>"))
    page = explorer.save(tmp_path / "explorer.html")
    open_page(browser, page)
    assert console_problems(browser) == []
    assert "Comparing pretrained and <i>tuned</i>" in browser.find_element(By.ID, "tokens-legend").text  # as text
    weights = explorer.records[0].weights  # [layer, head, query, key]
    screenshots = Path(os.environ.get("GPT1_SCREENSHOTS", tmp_path))
    screenshots.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(screenshots / "explorer-model-view.png"))

    # Head view, all heads of layer 0: click "it" and read what the page shades the tokens with.
    show(browser, "head")
    it = next(index for index, token in enumerate(explorer.tokens) if token.strip() == "it")
    box = browser.execute_script(f"return window.gpt1Explorer.tokenBox({it})")
    click(
        browser, browser.find_element(By.ID, "token-canvas"), box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    )
    ActionChains(browser).move_by_offset(0, 500).perform()  # leave the canvas: the clicked token stays chosen
    assert browser.execute_script("return window.gpt1Explorer.state.query") == it
    shaded = np.array(browser.execute_script("return window.gpt1Explorer.highlighted()"))
    np.testing.assert_allclose(shaded, weights[0, :, it].mean(0).numpy(), atol=1e-5)
    readout = browser.find_element(By.ID, "readout").text
    strongest = int(weights[0, :, it].mean(0).argmax())
    assert f"(token {it}) attends most to: ‘{explorer.tokens[strongest].strip()}’" in readout
    browser.save_screenshot(str(screenshots / "explorer-head-view.png"))

    # The model view's map of layer 1, head 2, clicked: the head view now shows that one head.
    show(browser, "model")
    grid = browser.execute_script("return {label: 52, top: 22, gap: 6}")
    cell = browser.find_element(By.ID, "model-canvas").size["width"]  # the canvas is label + heads × (cell + gap)
    cell = (cell - grid["label"]) / 4 - grid["gap"]
    click(
        browser,
        browser.find_element(By.ID, "model-canvas"),
        grid["label"] + 2 * (cell + grid["gap"]) + cell / 2,
        grid["top"] + 1 * (cell + grid["gap"]) + cell / 2,
    )
    state = browser.execute_script("return {layer: gpt1Explorer.state.layer, heads: [...gpt1Explorer.state.heads]}")
    assert state == {"layer": 1, "heads": [2]}
    shaded = np.array(browser.execute_script("return window.gpt1Explorer.highlighted()"))
    np.testing.assert_allclose(shaded, weights[1, 2, it].numpy(), atol=1e-5)

    # "What attends to it": the column.
    browser.find_element(By.CSS_SELECTOR, "input[name=direction][value=from]").click()
    shaded = np.array(browser.execute_script("return window.gpt1Explorer.highlighted()"))
    np.testing.assert_allclose(shaded, weights[1, 2, :, it].numpy(), atol=1e-5)

    # Step by step, in the browser from the recorded q, k, v: the model's weights and the head's output.
    show(browser, "step")
    numbers = browser.execute_script("return window.gpt1Explorer.stepNumbers()")
    np.testing.assert_allclose(numbers["weights"], weights[1, 2, it, : it + 1].numpy(), atol=1e-5)
    head_dim = explorer.records[0].head_dim
    output = explorer.records[0].head_outputs()[1, it, 2 * head_dim : 3 * head_dim]
    np.testing.assert_allclose(numbers["output"], output.numpy(), atol=1e-5)
    assert numbers["maxDifference"] < 1e-5
    assert "Check: the weights computed above" in browser.find_element(By.ID, "step-body").text
    browser.save_screenshot(str(screenshots / "explorer-step-by-step.png"))

    # The second model, and the difference, drawn without errors; the classify token's view; the summaries sort.
    Select(browser.find_element(By.ID, "model-select")).select_by_value("diff")
    show(browser, "head")
    difference = (explorer.records[1].weights - weights)[1, 2, :, it].numpy()
    np.testing.assert_allclose(browser.execute_script("return gpt1Explorer.highlighted()"), difference, atol=2e-5)
    show(browser, "classify")
    assert browser.find_element(By.ID, "classify-canvas").size["height"] > 100
    show(browser, "summary")
    browser.find_element(By.CSS_SELECTOR, '#summary-table th[data-key="previous"]').click()
    first_row = browser.find_element(By.CSS_SELECTOR, "#summary-table tbody tr")
    assert first_row.get_attribute("data-layer") is not None
    browser.save_screenshot(str(screenshots / "explorer-summaries.png"))

    # Save PNG: the button downloads the current view as a picture.
    browser.find_element(By.ID, "save-png").click()
    deadline = time.time() + 10
    while not list(browser.downloads.glob("attention-summary*.png")) and time.time() < deadline:
        time.sleep(0.1)
    [saved] = list(browser.downloads.glob("attention-summary*.png"))
    with Image.open(saved) as picture:
        assert picture.width > 300 and len(picture.convert("RGB").getcolors(1 << 16) or []) > 5
    assert console_problems(browser) == []
    with Image.open(screenshots / "explorer-head-view.png") as picture:
        assert len(picture.convert("RGB").getcolors(1 << 20) or []) > 50  # a drawn page, not a blank one


def test_in_chromium_a_full_context_of_512_tokens_opens_and_answers(browser, tokenizer, tmp_path):
    from selenium.webdriver.common.by import By

    config = tiny_config(vocab_size=len(tokenizer), n_positions=512, n_layer=2, n_head=4)
    torch.manual_seed(0)
    model = GPT1ForCausalLM(config).eval()
    text = " ".join(["the trophy did not fit in the suitcase because it was too big"] * 60)
    ids = ids_of(tokenizer, text)[:, :512]
    explorer = attention_html(model, tokenizer, tokenizer.decode(ids[0]))
    assert len(explorer.tokens) == 512
    page = explorer.save(tmp_path / "long.html")
    open_page(browser, page)
    show(browser, "head")
    click(browser, browser.find_element(By.ID, "token-canvas"), 20, 20)  # the first token's box
    query = browser.execute_script("return window.gpt1Explorer.state.query")
    shaded = np.array(browser.execute_script("return window.gpt1Explorer.highlighted()"))
    np.testing.assert_allclose(shaded, explorer.records[0].weights[0, :, query].mean(0).numpy(), atol=1e-5)
    show(browser, "model")
    show(browser, "summary")
    assert console_problems(browser) == []


def test_the_explorer_needs_no_matplotlib_and_the_pictures_say_they_do(tmp_path):
    script = """
import sys
sys.modules["matplotlib"] = None  # as if the viz extra were not installed
from gpt1.viz import attention_html, plot_metrics
try:
    plot_metrics(".")
except ImportError as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Drawing pictures needs matplotlib" in result.stdout and "attention_html, does not" in result.stdout
