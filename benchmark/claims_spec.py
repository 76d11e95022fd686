"""The ``claims:`` of a matrix: a study's findings as testable statements (schema only).

``ldct-bench report`` checks every claim on the scored run (:mod:`analysis.claims`) and gives it a
verdict: **holds**, **does not hold** or **inconclusive** (not enough evidence either way). A claim is
checked in one or more *conditions* (architecture × dose, × feature for texture claims, or one loss /
one cell for agreement claims); each condition's test is one-sided in the claimed direction *and* in the
reverse direction. The verdict rule is the same for every kind:

* **holds**: the claimed direction is significant in *every* condition;
* **does not hold**: the reverse direction is significant in *at least one* condition;
* **inconclusive**: otherwise (including conditions without data);
* **not tested**: an arm the claim compares did not pass the learning gate (:class:`GateConfig`) in one
  of its conditions; the tests are still run and shown, but they decide nothing.

(For ``equivalent`` the "claimed direction" is equivalence within the margin and the "reverse" a
significant difference larger than the margin; see below.)

"Significant" means a Holm-corrected p < ``alpha`` (Holm 1979, *Scand. J. Stat.* 6:65–70), the family
being one direction's tests over the conditions of one claim (for "holds" this is conservative: an
intersection–union test would need no correction), or, for ``agrees``, a 95 % interval lying entirely on
one side of the threshold. Five kinds, chosen with ``kind``::

    claims:
      - {id: mse_rmse, kind: better, a: mse, b: 0.95mse+0.05wgan_gp, metric: rmse_hu}
      - {id: avg_first, kind: ranks_first, a: mstlf_avg, metric: psnr, losses: [baseline, mstlf_avg, mstlf_max]}
      - {id: weak_agreement, kind: agrees, metric: lpips, expect: weak, threshold: 0.5}
      - {id: wgan_texture, kind: closer_texture, a: 0.95mse+0.05wgan_gp, b: mse}
      - {id: init_irrelevant, kind: equivalent, losses: [upl_s0, upl_s1, upl_s2], metric: psnr, margin: 0.5}

* ``better`` — *a* is better than *b* on ``metric`` (oriented by the metric's ``higher_is_better``) in
  every architecture × dose: one-sided Wilcoxon signed-rank on paired patient-level values.
* ``ranks_first`` — *a* ranks first among ``losses`` (default: all) on ``metric``: Friedman test over
  patients and Nemenyi post-hoc (Demšar 2006, *JMLR* 7:1–30). A condition's claimed p is the largest of
  the Friedman p and the Nemenyi p of *a* against each other loss, needing *a*'s mean rank to be the best;
  its reverse p is the largest of the Friedman p and the smallest Nemenyi p of *a* against a loss ranked
  above it.
* ``agrees`` — the loss (``against``: ``train_loss`` or ``val_loss``) and ``metric`` agree over training:
  agreement = Spearman/rm-corr ρ oriented so that > 0 means the metric improves as the loss falls
  (:mod:`analysis.correlations`); per loss pooled over its cells with the repeated-measures correlation
  (``method: rm_corr``, Bakdash & Marusich 2017, *Front. Psychol.* 8:456, pingouin's 95 % CI) or per cell
  with Spearman's ρ and a bootstrap 95 % CI (``method: spearman``). ``expect: agree`` claims
  agreement ≥ ``threshold``, ``expect: weak`` claims agreement < ``threshold``; a condition is on a side
  when its whole CI is.
* ``closer_texture`` — *a*'s noise texture is closer to the reference texture than *b*'s on the NPS
  ``features`` (``nps_favg``, ``nps_noise_hu``, ``nps_fpeak``). These metrics are of the *residual*
  (output − NDCT reference), so the scored data hold no NPS of the reference alone. The texture compared
  against (``reference``) is by default ``input``: the LDCT input's value of the same feature on the same
  patient and dose (``input_baseline.parquet``), i.e. the residual of unprocessed FBP noise — the
  reconstruction the NDCT shares, so its NPS shape (f_avg, f_peak) is the texture an un-smoothed output
  keeps, and its magnitude the noise a texture-preserving output retains. ``reference: ndct`` compares
  with the NDCT scan's *own* noise instead: the same features of (noise-free image − noisy NDCT
  reference), i.e. what a perfect denoiser's residual would show (``ndct_noise_baseline.parquet``; only
  where the dataset knows the noise-free image: ``synth`` with ``target: ndct``, else the claim has no
  data and is inconclusive). It is the reference of claims worded "closer to the NDCT's texture".
  ``reference`` may instead name a loss of the matrix. Per patient, closeness is ``|value − reference value|`` and the test a one-sided
  Wilcoxon on ``|b − ref| − |a − ref|``, Holm over features × architectures × doses.
* ``equivalent`` — the ``losses`` (≥ 2) do not differ on ``metric`` by more than ``margin`` (required,
  > 0, in the metric's units: e.g. 0.5 dB for PSNR, 0.005 for SSIM). A missing significant difference is
  no evidence of equivalence, so each pair of losses × architecture × dose gets a paired TOST (two
  one-sided tests, Schuirmann 1987, *J. Pharmacokinet. Biopharm.* 15:657–680) on the per-patient
  differences ``d = value(x) − value(y)``: one-sided Wilcoxon signed-rank tests of ``d − margin < 0`` and
  ``d + margin > 0``, the pair's equivalence p being the larger of the two. The Wilcoxon form (rather
  than the paired t TOST) is that of ``better``: the same unit and the same rank test, with no normality
  assumption on ~10 patient means of bounded, skewed metrics; what it bounds is the location (centre of
  symmetry, pseudo-median) of ``d``, not its mean. A pair × condition is *equivalent* when its Holm p
  (over all pairs × conditions of the claim) is < ``alpha``; it *differs* when the two-sided Wilcoxon p
  on ``d`` (Holm, same family) is < ``alpha`` **and** the median of ``d`` lies outside
  ``[−margin, margin]`` — a significant difference inside the margin does not count against the claim.
  The claim holds when every pair × condition is equivalent, does not hold when at least one differs,
  and is inconclusive otherwise. With n patients the exact one-sided Wilcoxon p is at least 2⁻ⁿ, so
  holding needs 2⁻ⁿ < ``alpha`` / (pairs × conditions) (e.g. 3 losses × 6 conditions at α 0.05: n ≥ 9).

``doses`` and ``architectures`` (default: all of the run's) restrict the conditions; ``alpha`` (0.05)
is the level; ``statement`` replaces the generated sentence (:func:`describe`). Loss labels, architecture
labels, doses and metrics must be the matrix's own (:func:`reference_errors`, called by the matrix schema).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NPSFeature = Literal["nps_favg", "nps_noise_hu", "nps_fpeak"]
_DEFAULT_FEATURES: tuple[NPSFeature, ...] = ("nps_favg", "nps_noise_hu")
INPUT_REFERENCE = "input"  # closer_texture's default reference: the LDCT input's own value
NDCT_REFERENCE = "ndct"  # closer_texture's reference: the NDCT scan's own noise (synth target: ndct)
BASELINE_REFERENCES = (INPUT_REFERENCE, NDCT_REFERENCE)
NOT_TESTED = "not tested"  # the verdict of a claim whose arms did not pass the learning gate
VERDICTS = ("holds", "does not hold", "inconclusive", NOT_TESTED)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class _Claim(Strict):
    """Fields every claim has."""

    id: str = Field(min_length=1, description="short label naming the claim in the report and claims.csv")
    statement: str = Field("", description="the sentence shown in the report; generated from the fields if empty")
    doses: list[str] | None = Field(None, description="doses the claim is checked at; default: every dose of the run")
    architectures: list[str] | None = Field(None, description="architecture labels; default: every one of the run")


class _Tested(_Claim):
    alpha: float = Field(0.05, gt=0, lt=1, description="level of the Holm-corrected tests")


class BetterClaim(_Tested):
    """``a`` better than ``b`` on ``metric`` in every architecture × dose (one-sided Wilcoxon, Holm)."""

    kind: Literal["better"]
    a: str
    b: str
    metric: str

    @model_validator(mode="after")
    def _distinct(self) -> BetterClaim:
        if self.a == self.b:
            raise ValueError(f"a and b are the same loss {self.a!r}")
        return self


class RanksFirstClaim(_Tested):
    """``a`` ranks first among ``losses`` on ``metric`` (Friedman, Nemenyi, Holm over conditions)."""

    kind: Literal["ranks_first"]
    a: str
    metric: str
    losses: list[str] | None = Field(None, description="the losses ranked (≥ 3, including a); default: all")

    @model_validator(mode="after")
    def _field(self) -> RanksFirstClaim:
        if self.losses is not None:
            if self.a not in self.losses:
                raise ValueError(f"losses must include a ({self.a!r})")
            if len(set(self.losses)) < 3:
                raise ValueError("ranking needs at least 3 distinct losses (for two, use kind: better)")
        return self


class EquivalentClaim(_Tested):
    """``losses`` do not differ on ``metric`` by more than ``margin`` (paired Wilcoxon TOST per pair, Holm)."""

    kind: Literal["equivalent"]
    losses: list[str] = Field(min_length=2, description="the losses claimed equivalent (≥ 2); every pair is tested")
    metric: str
    margin: float = Field(gt=0, allow_inf_nan=False,
                          description="equivalence margin in the metric's units (e.g. 0.5 dB PSNR, 0.005 SSIM)")  # fmt: skip

    @field_validator("losses")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        v = list(dict.fromkeys(v))
        if len(v) < 2:
            raise ValueError("equivalence needs at least 2 distinct losses")
        return v


class AgreesClaim(_Claim):
    """The training (or validation) loss and ``metric`` agree over training, or (``expect: weak``) do not."""

    kind: Literal["agrees"]
    metric: str
    losses: list[str] | None = Field(None, description="losses checked; default: all")
    against: Literal["train_loss", "val_loss"] = "train_loss"
    method: Literal["rm_corr", "spearman"] = Field(
        "rm_corr", description="rm_corr: per loss, pooled over its cells; spearman: per cell, bootstrap CI"
    )
    threshold: float = Field(0.5, gt=-1, lt=1, description="agreement (oriented ρ) from which the two agree")
    expect: Literal["agree", "weak"] = "agree"


class CloserTextureClaim(_Tested):
    """``a``'s NPS features closer to the reference texture's than ``b``'s (one-sided Wilcoxon, Holm)."""

    kind: Literal["closer_texture"]
    a: str
    b: str
    features: list[NPSFeature] = Field(default_factory=lambda: list(_DEFAULT_FEATURES), min_length=1)
    reference: str = Field(INPUT_REFERENCE, description="'input' (the LDCT input's values), 'ndct' (the NDCT "
                           "scan's own noise) or a loss label")

    @field_validator("features")
    @classmethod
    def _unique(cls, v: list[NPSFeature]) -> list[NPSFeature]:
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _distinct(self) -> CloserTextureClaim:
        if len({self.a, self.b, self.reference}) < 3:
            raise ValueError(f"a, b and reference must differ (got {self.a!r}, {self.b!r}, {self.reference!r})")
        return self


class GateConfig(Strict):
    """The learning gate (a matrix's ``gate:`` section): what every arm a claim compares must show before
    the claim may decide. A claim with one arm below the gate in one of its conditions is **not tested**,
    whatever its p-values, and the report names the arm, the condition and the number that failed.

    * every compared arm (loss) ends (at the compared epoch) at a mean ``rmse_hu`` ≤ ``rmse_ratio`` × the
      LDCT input's at that dose, on the same images: an arm that did not remove a fifth of the input's
      error has not learned to denoise, and comparing it says nothing about its loss;
    * ``closer_texture`` claims also need each compared arm's residual noise (``nps_noise_hu``) ≤
      ``noise_ratio`` × the input's: an output that keeps the input's noise matches the input's texture
      by construction;
    * ``agrees`` claims also need ≥ ``min_epochs`` scored epochs per cell and a loss (``against``) that
      has flattened: over the last third of the cell's epochs it moves by less than ``plateau`` × its
      whole range over training. Otherwise only the steep start of training is correlated, where any two
      monotone curves agree.

    The pseudo-arms (the LDCT input, the NDCT noise) are references, not arms. ``enabled: false`` turns
    the gate off (the report then says so)."""

    enabled: bool = Field(True, description="check the gate before every verdict")
    rmse_ratio: float = Field(0.8, gt=0, allow_inf_nan=False,
                              description="each compared arm's rmse_hu <= rmse_ratio x the LDCT input's")  # fmt: skip
    noise_ratio: float = Field(0.8, gt=0, allow_inf_nan=False,
                               description="closer_texture: each arm's nps_noise_hu <= noise_ratio x the input's")  # fmt: skip
    min_epochs: int = Field(10, ge=3, description="agrees: scored epochs per cell at least")
    plateau: float = Field(0.1, gt=0, le=1, allow_inf_nan=False,
                           description="agrees: the loss moves by < plateau x its range over the last third of epochs")  # fmt: skip

    def conventions(self) -> str:
        """One line for the report's conventions."""
        if not self.enabled:
            return "- **Learning gate**: off (`gate: {enabled: false}`): verdicts do not check that the arms learned."
        return (f"- **Learning gate** (before every verdict; `gate:`): each compared arm ends at `rmse_hu` ≤ "
                f"{self.rmse_ratio:g} × the LDCT input's at that dose; texture claims also need each arm's residual "
                f"noise `nps_noise_hu` ≤ {self.noise_ratio:g} × the input's; agreement claims need ≥ {self.min_epochs} "
                f"scored epochs per cell and a loss that moved by < {self.plateau:g} × its range over the last third "
                "of its epochs. A claim with an arm below the gate is **not tested**.")  # fmt: skip


def gate_metrics(claims: Sequence[AnyClaim], gate: GateConfig) -> list[str]:
    """The metrics the gate reads for ``claims``."""
    if not gate.enabled or not claims:
        return []
    return ["rmse_hu"] + (["nps_noise_hu"] if any(isinstance(c, CloserTextureClaim) for c in claims) else [])


AnyClaim = BetterClaim | RanksFirstClaim | AgreesClaim | CloserTextureClaim | EquivalentClaim
Claim = Annotated[AnyClaim, Field(discriminator="kind")]


def claim_metrics(claim: AnyClaim) -> list[str]:
    """The metrics a claim needs scored."""
    return list(claim.features) if isinstance(claim, CloserTextureClaim) else [claim.metric]


def _losses_named(claim: AnyClaim) -> list[tuple[str, list[str]]]:
    """``(field, loss labels)`` the claim names."""
    out: list[tuple[str, list[str]]] = []
    for name in ("a", "b"):
        if hasattr(claim, name):
            out.append((name, [getattr(claim, name)]))
    if isinstance(claim, RanksFirstClaim | AgreesClaim | EquivalentClaim) and claim.losses is not None:
        out.append(("losses", list(claim.losses)))
    if isinstance(claim, CloserTextureClaim) and claim.reference not in BASELINE_REFERENCES:
        out.append(("reference", [claim.reference]))
    return out


def _missing(where: str, values: Sequence[str], valid: Sequence[str], what: str) -> list[str]:
    bad = [v for v in values if v not in valid]
    if not bad:
        return []
    return [f"{where}: {', '.join(map(repr, bad))} is not a {what} of the matrix (valid: {', '.join(valid)})"]


RM_CORR_MIN_CELLS = 3
"""``pingouin.rm_corr`` pools a loss's cells (subjects); fewer than 3 leave it undefined."""


def reference_errors(claims: Sequence[AnyClaim], *, losses: Sequence[str], architectures: Sequence[str],
                     doses: Sequence[str], metrics: Sequence[str], seeds: int,
                     gate: GateConfig | None = None) -> list[str]:  # fmt: skip
    """One message per claim field naming something the matrix does not have (``claims[i].a: ...``),
    with the valid values; duplicate ids too; and an ``agrees`` claim whose ``method: rm_corr`` would pool
    fewer than :data:`RM_CORR_MIN_CELLS` cells per loss (architectures × doses × ``seeds`` it covers, before
    ``exclude``), which could only ever be "no data"; and a metric the learning ``gate`` reads
    (:func:`gate_metrics`) that ``evaluation.metrics`` lacks."""
    errors: list[str] = []
    for m in gate_metrics(claims, gate or GateConfig()):
        if m not in metrics:
            errors.append(f"gate: the learning gate reads {m}, which evaluation.metrics lacks (add it, or set "
                          "gate: {enabled: false})")
    ids = [c.id for c in claims]
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup:
        errors.append(f"claims: duplicate id(s) {dup}")
    for i, claim in enumerate(claims):
        at = f"claims[{i}]"
        for name, values in _losses_named(claim):
            errors += _missing(f"{at}.{name}", values, losses, "loss label")
        errors += _missing(f"{at}.architectures", claim.architectures or [], architectures, "architecture label")
        errors += _missing(f"{at}.doses", claim.doses or [], doses, "dose")
        field = "features" if isinstance(claim, CloserTextureClaim) else "metric"
        errors += _missing(f"{at}.{field}", claim_metrics(claim), metrics, "metric in evaluation.metrics")
        if isinstance(claim, AgreesClaim) and claim.method == "rm_corr":
            n_arch, n_dose = len(claim.architectures or architectures), len(claim.doses or doses)
            covered = n_arch * n_dose * seeds
            if covered < RM_CORR_MIN_CELLS:
                errors.append(
                    f"{at}.method: rm_corr pools the cells of each loss and needs >= {RM_CORR_MIN_CELLS}; this claim "
                    f"covers {covered} per loss ({n_arch} architecture(s) x {n_dose} dose(s) x {seeds} seed(s)): "
                    "use method: spearman (per cell, over epochs) or add seeds")
    return errors


def _where(claim: AnyClaim) -> str:
    doses = f"dose {', '.join(claim.doses)}" if claim.doses else "every dose"
    archs = f"architecture {', '.join(claim.architectures)}" if claim.architectures else "every architecture"
    return f"at {doses} and {archs}"


def describe(claim: AnyClaim) -> str:
    """The claim as a sentence: its ``statement``, or one generated from its fields."""
    if claim.statement:
        return claim.statement
    if isinstance(claim, BetterClaim):
        return f"{claim.a} is better than {claim.b} on {claim.metric} {_where(claim)}"
    if isinstance(claim, RanksFirstClaim):
        field = ", ".join(claim.losses) if claim.losses else "all losses"
        return f"{claim.a} ranks first on {claim.metric} among {field} {_where(claim)}"
    if isinstance(claim, EquivalentClaim):
        who = ", ".join(claim.losses[:-1]) + f" and {claim.losses[-1]}"
        return f"{who} do not differ on {claim.metric} by more than ±{claim.margin:g} (equivalence) {_where(claim)}"
    if isinstance(claim, AgreesClaim):
        who = ", ".join(claim.losses) if claim.losses else "every loss"
        how = "agree" if claim.expect == "agree" else "agree only weakly"
        sign = "≥" if claim.expect == "agree" else "<"
        return (f"{claim.against} and {claim.metric} {how} over training for {who} "
                f"(agreement {sign} {claim.threshold:g}) {_where(claim)}")  # fmt: skip
    ref = {INPUT_REFERENCE: "the LDCT input's", NDCT_REFERENCE: "the NDCT scan's own noise"}.get(
        claim.reference, f"{claim.reference}'s")
    return (f"{claim.a}'s noise texture ({', '.join(claim.features)}) is closer to {ref} than {claim.b}'s "
            f"{_where(claim)}")  # fmt: skip
