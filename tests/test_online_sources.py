"""The paper's data when online, tested offline on datasets written here in the hub's own formats:
``--calibration wikitext2-train`` (the wikitext-2-raw-v1 train split through ``datasets``, SVD-LLM's windows) and
``--hellaswag lm-eval`` (lm-eval's own hellaswag task, its ctx_a / ctx_b preprocessing); offline, one line each."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import datasets
import lm_eval
import pytest
import torch
from test_calibration import CharTokenizer

from experiments import data
from experiments.cli import main
from experiments.data import HellaSwagItem
from experiments.errors import GbdError
from experiments.evaluation import hellaswag as evaluation
from experiments.model import loading
from experiments.model.loading import load_model
from experiments.model.moments import svd_llm_batch
from experiments.runs.context import hellaswag_data_source, prepare
from experiments.runs.modes import mode

HUB_README = """---
configs:
- config_name: wikitext-2-raw-v1
  data_files:
  - split: train
    path: wikitext-2-raw-v1/train-*
---
"""


@pytest.fixture
def local_wikitext(tmp_path, monkeypatch) -> list[str]:
    """A wikitext repository in the hub's layout (README configs + parquet) holding the packaged valid rows as
    its train split; ``--calibration wikitext2-train`` reads it."""
    rows = data.hf_rows((data.PACKAGED_DATA / data.WIKITEXT_VALID_TOKENIZED).read_text(encoding="utf-8"))[:3000]
    repo = tmp_path / "wikitext"
    (repo / "wikitext-2-raw-v1").mkdir(parents=True)
    (repo / "README.md").write_text(HUB_README)
    datasets.Dataset.from_dict({"text": rows}).to_parquet(repo / "wikitext-2-raw-v1" / "train-00000-of-00001.parquet")
    monkeypatch.setattr(data, "WIKITEXT_REPO", str(repo))
    monkeypatch.setenv("GBD_CALIBRATION", "wikitext2-train")
    monkeypatch.delenv("GBD_CALIB_TEXT", raising=False)
    return rows


def test_wikitext2_train_is_the_split_joined_with_blank_lines(local_wikitext):
    source = data.calibration_text()
    assert source.text == "\n\n".join(local_wikitext) and source.windows == "svd-llm"
    assert source.path.startswith("datasets:") and source.sha256 == hashlib.sha256(source.text.encode()).hexdigest()


def test_svd_llm_windows_start_at_seeded_character_offsets():
    text = "".join(chr(97 + (i * 7) % 26) for i in range(5000))
    n, T = 6, 40
    batch = svd_llm_batch(CharTokenizer(), text, n, T, seed=3)
    rng = random.Random(3)                                   # SVD-LLM: random.seed(seed); randint(0, len - T - 1)
    offsets = [rng.randint(0, len(text) - T - 1) for _ in range(n)]
    expected = torch.tensor([[ord(c) for c in text[i:i + T]] for i in offsets])
    assert torch.equal(batch, expected)
    assert not torch.equal(batch, svd_llm_batch(CharTokenizer(), text, n, T, seed=4))
    with pytest.raises(GbdError, match="too few"):
        svd_llm_batch(CharTokenizer(), text[:T], n, T, seed=3)


def test_an_unreachable_train_split_is_one_line_naming_the_local_source(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "WIKITEXT_REPO", str(tmp_path / "nowhere"))
    monkeypatch.setenv("GBD_CALIBRATION", "wikitext2-train")
    monkeypatch.delenv("GBD_CALIB_TEXT", raising=False)
    with pytest.raises(GbdError, match="offline, use --calibration local") as caught:
        data.calibration_text()
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, save_tiny, tiny_neox) -> str:
    return save_tiny(tiny_neox(2048), tmp_path_factory.mktemp("tiny"), True)


def test_the_calibration_source_is_named_in_the_sources_and_keys_the_cache(local_wikitext, tiny_dir, tmp_path,
                                                                            monkeypatch):
    loaded = load_model(tiny_dir)
    online = prepare(loaded, mode("quick"), 3, tmp_path, progress=False)
    monkeypatch.setenv("GBD_CALIBRATION", "local")
    local = prepare(loaded, mode("quick"), 3, tmp_path, progress=False)
    assert online.sources["calibration"]["path"].startswith("datasets:")
    assert "train split" in online.sources["calibration"]["name"]
    assert local.sources["calibration"]["path"] == data.WIKITEXT_VALID_TOKENIZED
    assert len(list(tmp_path.glob("calibration-*.pt"))) == 2          # one cache file per source
    assert not all(torch.allclose(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(online.sigmas, local.sigmas))


HUB_ITEMS = [
    {"activity_label": "Baking cookies", "ctx_a": "A woman pours flour into a bowl.", "ctx_b": "she",
     "endings": ["stirs the batter.", "flies away.", "reads a map.", "paints a wall."], "label": "0"},
    {"activity_label": "Kayaking", "ctx_a": "Two men paddle down a river.", "ctx_b": "the boat",
     "endings": ["sinks at once.", "turns around a rock.", "sings.", "becomes a car."], "label": "1"},
    {"activity_label": "Gardening", "ctx_a": "A man kneels by a flower bed.", "ctx_b": "he",
     "endings": ["digs a hole.", "swims.", "drives off.", "cooks rice."], "label": "0"},
]


@pytest.fixture
def local_hellaswag(tmp_path, monkeypatch) -> None:
    """lm-eval's own hellaswag task (its yaml, process_docs and metrics, included) reading a local parquet file
    of hub-schema rows instead of Rowan/hellaswag."""
    rows = [{**item, "ind": i, "ctx": item["ctx_a"] + " " + item["ctx_b"], "source_id": f"x{i}", "split": "val",
             "split_type": "indomain"} for i, item in enumerate(HUB_ITEMS)]
    parquet = tmp_path / "validation.parquet"
    datasets.Dataset.from_list(rows).to_parquet(parquet)
    lm_eval_yaml = Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "hellaswag.yaml"
    (tmp_path / "hellaswag_hub_local.yaml").write_text(
        f"include: {lm_eval_yaml}\ntask: hellaswag_hub_local\ndataset_path: parquet\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {parquet}\ntraining_split: null\n")
    monkeypatch.setattr(evaluation, "LM_EVAL_HELLASWAG", ("hellaswag_hub_local", str(tmp_path)))
    monkeypatch.setenv("GBD_HELLASWAG", "lm-eval")


def test_lm_eval_hellaswag_applies_its_own_ctx_b_preprocessing(local_hellaswag, tiny_dir):
    loaded = load_model(tiny_dir)
    result = evaluation.hellaswag_lm_eval(loaded.model, loaded.tokenizer, limit=3)
    assert result.n == 3 and "its own dataset" in result.source
    capitalized = [HellaSwagItem(it["activity_label"], it["ctx_a"] + " " + it["ctx_b"].capitalize(), it["endings"],
                                 int(it["label"])) for it in HUB_ITEMS]
    assert evaluation.hub_items(evaluation.lm_eval_hellaswag()[2]) == capitalized
    direct = evaluation.hellaswag_direct(loaded.model, loaded.tokenizer, capitalized)
    torch.testing.assert_close(torch.tensor(result.logliks), torch.tensor(direct.logliks), atol=1e-4, rtol=0)
    assert result.gold == (0, 1, 0)
    source = hellaswag_data_source(Path("unused"), "unused")
    assert source["path"] == "lm-eval task hellaswag_hub_local" and source["sha256"] != "unused"


@pytest.mark.parametrize("option, message", [
    (["--calibration", "wikitext2-train"], "offline, use --calibration local"),
    (["--hellaswag", "lm-eval"], "offline, use --hellaswag local"),
])
def test_online_sources_while_offline_fail_in_one_line_before_the_model_is_read(option, message, tmp_path,
                                                                                monkeypatch, capsys):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was read"))
    assert main(["surgery", *option, "--mode", "quick", "--quiet", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
