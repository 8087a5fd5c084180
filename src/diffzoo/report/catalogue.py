"""The papers' claims that diffzoo can check, as data: what each says, where the paper shows it, and how
it is tested (its kind). A params file's `claims:` section names which to check and on which runs
(`claims: {dit-patch: [dit-w64-p8, dit-w64-p4, dit-w64-p2]}`); `diffzoo claims` computes them
(report/claims.py) into results/claims.md.

Kinds, and what a claim's list of runs means for each (a name is an experiment or sampling id; one
with `seeds:` stands for all its seeds, `<id>-seed<s>`):
- trend:   FID falls as `x` rises (x: gflops, depth or width); two or more configs. Statistic: the
           slope of log FID on log x over every seed of every config (least squares, t interval).
- better:  [baseline, claimed better]: FID(baseline) - FID(better) > 0 (Welch interval of the means).
- routing: [a MoE config]: DiT-MoE's expert specialisation -- the timestep decides expert choice more
           than the class does (mean over layers), and the token's position decides it less in the
           last MoE layer than in the first (normalised mutual information, per seed; t interval).
- cost:    [attention-free, attention]: forward Gflops against tokens as the resolution grows: the
           first's exponent below the second's; with measured step times.
- ranking: two or more configs at matched Gflops: every pair's FID difference with its interval.
"""
from __future__ import annotations

# The claims stage's outputs under results/ (report/claims.py writes them; the plan names them)
CLAIMS_MD, CLAIMS_JSON, CLAIMS_PLOTS = "claims.md", "claims.json", "claims"

KINDS = ("trend", "better", "routing", "cost", "ranking")
ARITY = {"trend": (2, None), "better": (2, 2), "routing": (1, 1), "cost": (2, 2), "ranking": (2, None)}
TREND_X = ("gflops", "depth", "width")

DIS_SCALING = ("abstract: 'DiS models with higher Gflops, achieved through augmentation of depth/width or "
               "augmentation of input tokens, consistently demonstrate lower FID' (DiS-S/B/M/L/H)")

CLAIMS: dict[str, dict] = {
    "dit-patch": {
        "paper": "DiT", "kind": "trend", "x": "gflops",
        "claim": "FID falls as forward Gflops rise by shrinking the patch (same parameters, more tokens).",
        "evidence": "Table 4 / Fig. 8: DiT-S/8 153.6, S/4 100.4, S/2 68.4 at 0.36, 1.41, 6.06 Gflops (400K steps)",
    },
    "dit-width": {
        "paper": "DiT", "kind": "trend", "x": "gflops",
        "claim": "FID falls as forward Gflops rise by widening the model (same patch).",
        "evidence": "Table 4: DiT-S/2 68.4, B/2 43.5, L/2 23.3, XL/2 19.5 at 6.1, 23.0, 80.7, 118.6 Gflops",
    },
    "dit-guidance": {
        "paper": "DiT", "kind": "better",
        "claim": "Classifier-free guidance (scale 1.5) lowers FID.",
        "evidence": "Table 2: DiT-XL/2 FID 9.62 without guidance, 2.27 at cfg 1.5 (ImageNet 256)",
    },
    "moe-vs-dense": {
        "paper": "DiT-MoE", "kind": "better",
        "claim": "At equal activated parameters, the sparse MoE model beats the dense one.",
        "evidence": "abstract: DiT-MoE is 'competitive with dense networks' and performs 'on par with dense "
                    "networks yet requires much less computational load during inference'",
    },
    "moe-shared-expert": {
        "paper": "DiT-MoE", "kind": "better",
        "claim": "The always-on shared expert helps (the same MoE without it is worse).",
        "evidence": "abstract: 'shared expert routing' is one of its two designs, 'capturing common knowledge and "
                    "reducing redundancy among the different routed experts'",
    },
    "moe-routing": {
        "paper": "DiT-MoE", "kind": "routing",
        "claim": "Experts specialise by denoising timestep and position, hardly by class; deeper MoE layers "
                 "are less position-specific.",
        "evidence": "abstract and its expert-routing heat maps: 'expert selection shows preference with spatial "
                    "position and denoising time step, while insensitive with different class-conditional "
                    "information'; deeper, selection 'shifts from specific spatial position to dispersion'",
    },
    "dis-depth": {
        "paper": "DiS", "kind": "trend", "x": "depth",
        "claim": "FID falls as DiS gets deeper (same width).",
        "evidence": DIS_SCALING,
    },
    "dis-width": {
        "paper": "DiS", "kind": "trend", "x": "width",
        "claim": "FID falls as DiS gets wider (same depth).",
        "evidence": DIS_SCALING,
    },
    "dis-skips": {
        "paper": "DiS", "kind": "better",
        "claim": "The U-ViT long skips help (the same DiS without them is worse).",
        "evidence": "DiS keeps U-ViT's long skips between shallow and deep blocks (its architecture figure); "
                    "U-ViT's ablation found them essential",
    },
    "diffussm-vs-dit": {
        "paper": "DiffuSSM", "kind": "better",
        "claim": "At equal Gflops, the attention-free model without patchify beats a patchified DiT.",
        "evidence": "ImageNet 256 without guidance: DiffuSSM-XL FID 9.07 against DiT-XL/2's 9.62 (papers.yaml), "
                    "at 280 against 119 Gflops and fewer training images",
    },
    "diffussm-cost": {
        "paper": "DiffuSSM", "kind": "cost",
        "claim": "Without attention, cost grows about linearly in the tokens as the resolution grows; "
                 "attention grows faster.",
        "evidence": "DiffuSSM-XL: 280.3 Gflops at 256 and 1066.2 at 512, x3.8 for 4x the tokens (papers.yaml)",
    },
    "mamba-ranking": {
        "paper": "Mamba family", "kind": "ranking",
        "claim": "At matched Gflops, which SSM designs denoise better than others (and which differences are real).",
        "evidence": "no paper compares them on one recipe: diffzoo's own comparison (README, the Mamba family)",
    },
}


def check_claims(claims: dict[str, list[str]], resolve, model_of) -> str | None:
    """The first problem of a params file's `claims:` as a message (None when they are fine): an
    unknown claim, a run name that `resolve(name)` does not find (it returns the runs or None), the
    wrong number of runs for the claim's kind, or a routing claim on a model without MoE layers
    (`model_of(run)` names a run's model)."""
    for claim_id, names in claims.items():
        if claim_id not in CLAIMS:
            return f"claims.{claim_id}: unknown claim; allowed: {', '.join(CLAIMS)}"
        kind = CLAIMS[claim_id]["kind"]
        low, high = ARITY[kind]
        if len(names) < low or (high is not None and len(names) > high):
            want = f"{low}" if low == high else f"at least {low}"
            return f"claims.{claim_id}: {len(names)} runs; a {kind} claim takes {want} ({KIND_LISTS[kind]})"
        for name in names:
            runs = resolve(name)
            if not runs:
                return (f"claims.{claim_id}: {name!r} is no experiment or sampling id (nor one with seeds: "
                        f"{name}-seed<s>)")
            if kind == "routing" and "MoE" not in model_of(runs[0]):
                return (f"claims.{claim_id}: {name!r} is {model_of(runs[0])}, which has no experts to route; "
                        f"a routing claim takes a MoE model (DiT-MoE-*, MoE-Mamba-*)")
    return None


KIND_LISTS = {"trend": "the configs, any order", "better": "[baseline, the claimed better]",
              "routing": "[the MoE config]", "cost": "[attention-free, attention]", "ranking": "the configs"}
