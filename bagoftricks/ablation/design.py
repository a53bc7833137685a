"""Two-level designs for ``mode: factorial`` (tricks off = -1, on = +1): full 2^k and regular 2^(k-p) fractions
with minimum-aberration generators (Montgomery, Design and Analysis of Experiments, Table 8.14), and their effects.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass, replace

from bagoftricks.ablation.stats import holm, interval_text, one_sample

LETTERS = "ABCDEFGHJK"  # factor letters (I is the identity column)
ROMAN = {3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII"}
# (factors, runs per seed) -> generated factors as words over the base factors; resolution IV or higher only.
GENERATORS: dict[tuple[int, int], tuple[str, ...]] = {
    (4, 8): ("ABC",),
    (5, 16): ("ABCD",),
    (6, 16): ("ABC", "BCD"),
    (6, 32): ("ABCDE",),
    (7, 16): ("ABC", "BCD", "ACD"),
    (7, 32): ("ABCD", "ABDE"),
    (7, 64): ("ABCDEF",),
    (8, 16): ("BCD", "ACD", "ABC", "ABD"),
    (8, 32): ("ABC", "ABD", "BCDE"),
    (8, 64): ("ABCD", "ABEF"),
}


def _product(*words: str) -> str:
    """The product of effect words: letters that appear an even number of times cancel (A * A = I)."""
    letters = [letter for word in words for letter in word]
    return "".join(sorted(letter for letter in set(letters) if letters.count(letter) % 2))


@dataclass(frozen=True)
class Design:
    factors: tuple[str, ...]  # trick names, in the spec's order; factor j has letter LETTERS[j]
    matrix: tuple[tuple[int, ...], ...]  # one row of -1/+1 per run of one seed
    generators: tuple[str, ...]  # e.g. ("E=ABCD",); empty for a full factorial

    @property
    def words(self) -> list[str]:
        """The defining relation: every product of the generator words (without I)."""
        words = [_product(g.split("=")[0], g.split("=")[1]) for g in self.generators]
        return sorted({_product(*combo) for r in range(1, len(words) + 1) for combo in itertools.combinations(words, r)}, key=lambda w: (len(w), w))

    @property
    def resolution(self) -> float:
        """Length of the shortest word of the defining relation (infinite for a full factorial)."""
        return min((len(w) for w in self.words), default=math.inf)

    def aliases(self, effect: str) -> list[str]:
        """The effects (as letter words) that share the column of ``effect``."""
        return sorted((_product(effect, w) for w in self.words), key=lambda w: (len(w), w))

    def column(self, effect: str) -> list[int]:
        """The -1/+1 column of an effect word (the product of its factors' columns)."""
        indices = [LETTERS.index(letter) for letter in effect]
        return [math.prod(row[i] for i in indices) for row in self.matrix]

    def label(self, effect: str) -> str:
        return " x ".join(self.factors[LETTERS.index(letter)] for letter in effect)


def design(factors: list[str], runs: int | None = None) -> Design:
    """The 2^k design (``runs`` None or 2^k) or the regular fraction with ``runs`` runs per seed.

    Rows are in standard order (the first factor alternates fastest); row 0 has every base factor off.
    """
    k = len(factors)
    if k > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} factors, got {k}")
    if runs is None or runs == 2**k:
        generators: tuple[str, ...] = ()
    elif (k, runs) in GENERATORS:
        base = LETTERS[: k - len(GENERATORS[k, runs])]
        generators = tuple(f"{LETTERS[len(base) + i]}={word}" for i, word in enumerate(GENERATORS[k, runs]))
    else:
        choices = sorted({r for (n, r) in GENERATORS if n == k} | {2**k})
        raise ValueError(f"no resolution IV design of {k} factors in {runs} runs; choose runs from {choices}")
    base_count = k - len(generators)
    matrix = []
    for i in range(2**base_count):
        row = [1 if (i >> j) & 1 else -1 for j in range(base_count)]
        for generator in generators:
            row.append(math.prod(row[LETTERS.index(letter)] for letter in generator.split("=")[1]))
        matrix.append(tuple(row))
    return Design(tuple(factors), tuple(matrix), generators)


@dataclass(frozen=True)
class Effect:
    """One main effect or two-way interaction, in points: mean over seeds of the per-seed estimates."""

    word: str
    label: str
    n: int
    estimate: float
    low: float
    high: float
    p: float
    p_holm: float
    aliases: tuple[str, ...]  # the other two-way (or shorter) effects that share the column


def effects(plan: Design, responses: dict[int, list[float]]) -> list[Effect]:
    """Main effects and two-way interactions from ``responses`` (seed -> one top-1 per design row).

    Each seed is a replicate of the whole design: its effect estimate is mean(y | column = +1) -
    mean(y | column = -1); the interval is the t-interval of the seeds' estimates (seeds are the blocks).
    Effects that share a column are reported once, under the shortest and first of their names.
    """
    letters = LETTERS[: len(plan.factors)]
    rows, seen = [], set()
    for word in [*letters, *map("".join, itertools.combinations(letters, 2))]:
        if word in seen:
            continue
        aliases = [a for a in plan.aliases(word) if len(a) <= 2 and a != word]
        seen.update(aliases)
        estimates = [2 * statistics.fmean(x * y for x, y in zip(plan.column(word), ys)) for ys in responses.values()]
        label, aliased = plan.label(word), tuple(map(plan.label, aliases))
        rows.append(Effect(word, label, len(estimates), *one_sample(estimates), p_holm=math.nan, aliases=aliased))
    return [replace(row, p_holm=p) for row, p in zip(rows, holm([row.p for row in rows]))]


def effects_section(plan: Design, records: list) -> str:
    """The markdown section of results.md with the main effects and two-way interactions of a factorial ablation
    (step i is row i of ``plan``), from the runs' records (diverged runs left out: a seed missing a row is not a
    complete replicate)."""
    k, runs = len(plan.factors), len(plan.matrix)
    by_seed: dict[int, dict[int, float]] = {}
    for run in records:
        if run.val_top1 is not None and not run.diverged:
            by_seed.setdefault(run.seed, {})[run.step_index] = run.val_top1
    complete = {seed: [values[i] for i in range(runs)] for seed, values in sorted(by_seed.items()) if set(range(runs)) <= set(values)}
    kind = f"2^{k} full factorial"
    if plan.generators:
        resolution = ROMAN.get(plan.resolution, plan.resolution)
        kind = f"2^({k}-{k - round(math.log2(runs))}) fraction, {', '.join(plan.generators)}, resolution {resolution}"
    lines = [f"### Factorial effects ({kind}; {runs} runs per seed, {len(complete)} complete seed(s))", ""]
    if not complete:
        return "\n".join([*lines, "No seed has finished every row of the design yet.", ""])
    lines += ["| effect | estimate (points) [95% CI] | p (Holm) | aliased with |", "|---|---|---|---|"]
    for e in effects(plan, complete):
        p_holm = "" if math.isnan(e.p_holm) else f"{e.p_holm:.3g}"
        lines.append(f"| {e.label} | {interval_text(e.estimate, e.n, e.low, e.high, e.p_holm)} | {p_holm} | {', '.join(e.aliases)} |")
    aliasing = (
        "every effect is estimated free of every other" if not plan.generators else
        f"defining relation I = {' = '.join(plan.words)}: main effects are aliased with interactions of three or more "
        "tricks (assumed small), and two-way interactions that share a column are listed together"
    )  # fmt: skip
    lines += ["", "Effect: mean top-1 with the trick (for A x B: with both or neither) minus without, over the design's rows, "
              "estimated per seed (one replicate of the design) and averaged, with the t-interval over seeds; marks as in the "
              f"table above (Holm over this table). Aliasing: {aliasing}.", ""]
    return "\n".join(lines)
