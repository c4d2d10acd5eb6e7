"""Each method study runs end to end with --smoke (3 steps, one seed, two settings; ~20-40 s each on an idle 2-core CPU) through the
shared trainer and writes its Markdown table, JSON and plot."""
import importlib
import json

import pytest

STUDIES = {
    # study: (columns of the table, number of smoke settings)
    "dcl": (("batch", "loss"), 2),
    "mv_dhel": (("K", "loss"), 2),
    "loss_behaviour": (("loss", "T", "quantile"), 2),
    "swav": (("loss", "crops", "batch", "queue"), 2),
    "hydra": (("method", "loss", "partners"), 2),
    "supcon": (("method", "lr"), 2),
    "primer": (("data", "method"), 2),
    "dat_jem": (("method",), 2),
    "cmim": (("method", "batch"), 1),
    "sepclr": (("method", "mi_weight"), 1),
    "laso": (("method",), 2),
    "core_tuning": (("method", "lr"), 1),
    "m3col": (("method", "lr"), 1),
    "symile": (("data", "method"), 1),
    "tcl": (("arm", "imc", "lmi"), 1),
    "clip_vs_siglip": (("loss", "batch", "lr", "steps", "impl"), 2),
    "improved_vlp": (("method", "local_views", "ssl_weight", "views"), 1),
    "contrastive_search": (("training", "decoder"), 1),
}
# Studies whose runs have no linear probe: the [0, 1] metric the smoke test checks instead.
SMOKE_METRIC = {"laso": "union_seen"}
SMOKE_METRIC["contrastive_search"] = "diversity"  # rows are decodings, not trainer runs
# WhitenedCSE vs SimCSE (text): the pretrained row + 2 methods; no probe, the pair AUC instead.
STUDIES["whitenedcse"] = (("method", "loss", "views"), 3)
SMOKE_METRIC["whitenedcse"] = "pair_auc"
# CoDiEmb (text): pretrained + naive + CoDiEmb final / average / delta-guided; no probe.
STUDIES["codiemb"] = (("arm", "variant", "batches"), 5)
SMOKE_METRIC["codiemb"] = "mrr@10"
# MMHCL vs LightGCN (graph recipe jaxcl.recipes.mmhcl, not trainer runs): test Recall@20.
STUDIES["mmhcl"] = (("method",), 2)
SMOKE_METRIC["mmhcl"] = "recall_all"
# MEOW / AdaMEOW vs InfoNCE (graph recipe jaxcl.recipes.meow, not trainer runs): macro-F1.
STUDIES["meow"] = (("method",), 2)
SMOKE_METRIC["meow"] = "macro_f1"
# Lexical specialization (text recipe): the smoke runs the method arm only (its row holds BEFORE).
STUDIES["lexical_specialization"] = (("method",), 1)
SMOKE_METRIC["lexical_specialization"] = "ret_unseen/recall@10"
# MoE-MNRL (text recipe): the smoke runs the MoE arm only (tiny BERT); macro MRR@10, no probe.
STUDIES["moe_mnrl"] = (("arm",), 1)
SMOKE_METRIC["moe_mnrl"] = "mrr@10"
# MCLRec vs SASRec (sequence recipe jaxcl.recipes.mclrec, not trainer runs): test HR@10.
STUDIES["mclrec"] = (("method",), 2)
SMOKE_METRIC["mclrec"] = "hr@10"
# SSACL ± adversarial positives (table recipe jaxcl.recipes.table_integration): pair AP.
STUDIES["table_integration"] = (("method",), 2)
SMOKE_METRIC["table_integration"] = "pair_ap"
# InstructUE AR + CL vs AR-only (own loop, jaxcl.recipes.instructue): held-out answer MRR.
STUDIES["instructue"] = (("method",), 2)
SMOKE_METRIC["instructue"] = "mrr"
# Recipes whose file name does not end with their dataset's name.
RECIPE_DATA = {"laso_synthetic": "multilabel_protos", "sepclr_digits": "digits_grating"}
RECIPE_DATA["m3col_breast_cancer"] = "breast_cancer_blocks"
RECIPE_DATA["symile_xor"] = "symile_xor"
RECIPE_DATA["tcl_digits"] = "digits_captions"
RECIPE_DATA["siglip_digits"] = "digits_captions"
RECIPE_DATA["improved_vlp_digits"] = "digits_captions"


# Text studies: WordNet, the text extra and MiniLM's tokenizer (tests/optional.py).
NEEDS = {s: ("wordnet", "text", "minilm") for s in
         ("codiemb", "contrastive_search", "lexical_specialization", "moe_mnrl", "whitenedcse")}


@pytest.mark.long  # a study smoke
@pytest.mark.parametrize("study", [pytest.param(s, marks=pytest.mark.requires(*NEEDS.get(s, ())))
                                   for s in sorted(STUDIES)])
def test_study_smoke(study, tmp_path):
  columns, n_settings = STUDIES[study]
  module = importlib.import_module(f"experiments.{study}")
  module.main(["--smoke", "--out", str(tmp_path)])
  check_smoke_outputs(study, tmp_path, columns, n_settings)


def check_smoke_outputs(study, tmp_path, columns, n_settings):
  """A study's --smoke outputs in ``tmp_path``: md / json / png, the table and the verdict."""
  for ext in ("md", "json", "png"):
    assert (tmp_path / f"{study}.{ext}").stat().st_size > 0
  out = json.loads((tmp_path / f"{study}.json").read_text())
  assert out["command"] == f"python -m experiments.{study} --smoke"
  assert {"cpu", "cores", "jax", "date"} <= set(out["machine"])
  assert len(out["summary"]) == n_settings and len(out["runs"]) == n_settings
  for s in out["summary"]:
    assert set(columns) <= set(s["setting"]) and s["n"] == 1
    m = SMOKE_METRIC.get(study, "linear_probe")
    assert 0.0 < s[m]["mean"] <= 1.0 and s[m]["std"] == 0.0
  md = (tmp_path / f"{study}.md").read_text()
  rows = [l for l in md.splitlines() if l.startswith("| ")]
  assert rows[0].split(" | ")[:len(columns)] == ["| " + columns[0], *columns[1:]]
  assert len(rows) == 1 + n_settings  # header + one row per setting
  assert "## Verdict" in md and "Machine:" in md and f"{study}.png" in md


@pytest.mark.parametrize("name", ["dcl_digits", "mv_dhel_digits", "loss_behaviour_digits",
                                  "mv_dhel_mnist1d", "loss_behaviour_mnist1d",
                                  "supremix_diabetes", "dcl_mnist1d", "supcon_mnist1d",
                                  "hydra_digits", "primer_mnist1d", "laso_synthetic",
                                  "dat_digits", "cmim_digits", "core_tuning_digits",
                                  "sepclr_digits", "m3col_breast_cancer",
                                  "symile_xor", "tcl_digits", "siglip_digits",
                                  "improved_vlp_digits"])
def test_method_recipes_validate(name):
  from jaxcl.train.config import make_objective, validate
  c = importlib.import_module(f"configs.{name}").get_config()
  assert validate(c, num_devices=8, num_processes=1).name == RECIPE_DATA.get(
      name, name.rsplit("_", 1)[1])
  make_objective(c)  # the loss has an adapter and its kwargs are accepted


def test_study_shards_skip_finished_settings_and_merge(tmp_path):
  # Rows of both smoke settings already in the shards' file: a shard trains nothing (it would
  # take seconds and print), and --from-rows renders them in grid order.
  from experiments import mv_dhel
  grid = mv_dhel.settings(True)
  rows = [{"setting": label, "seed": 0, "linear_probe": 0.5 + 0.1 * i, "knn": 0.4,
           "effective_rank": 10.0 + i} for i, (label, _) in enumerate(grid)]
  path = tmp_path / "mv_dhel.rows.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))
  with pytest.raises(SystemExit) as e:
    mv_dhel.main(["--smoke", "--shard", "0/1", "--out", str(tmp_path)])
  assert e.value.code == 0 and len(path.read_text().splitlines()) == len(grid)
  mv_dhel.main(["--smoke", "--from-rows", "--out", str(tmp_path)])
  out = json.loads((tmp_path / "mv_dhel.json").read_text())
  assert [r["setting"] for r in out["runs"]] == [label for label, _ in grid]
  assert [s["linear_probe"]["mean"] for s in out["summary"]] == [0.5, 0.6]
