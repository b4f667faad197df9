"""DP calibration against dp-accounting, and the pfl aggregation pieces that DP relies on."""

from __future__ import annotations

import pytest

dp_accounting = pytest.importorskip("dp_accounting")
from fedimage.errors import OptionError  # noqa: E402
from fedimage.training.privacy import calibrate, epsilon_spent, noise_multiplier_for  # noqa: E402

# rounds, cohort, noise cohort, population, epsilon, delta
CASES = [
    (20, 10, None, 100, 2.0, 1e-5),
    (20, 20, 50, 400, 1.0, 1e-5),
    (10, 9, None, 9, 4.0, 1e-3),  # every user every round (q = 1)
]


pytestmark = pytest.mark.slow  # Ray, Flower, pfl, training or a docs build: `make test-fast` skips it


def direct_epsilon(sigma: float, q: float, rounds: int, delta: float, accountant) -> float:
    event = dp_accounting.GaussianDpEvent(sigma)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    return accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds)).get_epsilon(delta)


@pytest.mark.parametrize(("rounds", "cohort", "noise_cohort", "population", "epsilon", "delta"), CASES)
def test_calibration_meets_the_budget_tightly(rounds, cohort, noise_cohort, population, epsilon, delta):
    result = calibrate(
        epsilon,
        delta,
        rounds=rounds,
        cohort_size=cohort,
        population=population,
        noise_cohort_size=noise_cohort,
    )
    q = max(cohort, noise_cohort or cohort) / population
    assert result.sampling_probability == pytest.approx(q)
    assert result.noise_scale == pytest.approx(cohort / max(cohort, noise_cohort or cohort))
    pld = direct_epsilon(result.noise_multiplier, q, rounds, delta, dp_accounting.pld.PLDAccountant())
    assert result.epsilon == pytest.approx(pld, rel=1e-9) and pld <= epsilon
    # the smallest such noise: a little less overspends
    assert (
        direct_epsilon(result.noise_multiplier - 0.01, q, rounds, delta, dp_accounting.pld.PLDAccountant())
        > epsilon
    )
    # RDP is an upper bound on the same mechanism, looser than PLD by a modest factor
    rdp = direct_epsilon(result.noise_multiplier, q, rounds, delta, dp_accounting.rdp.RdpAccountant())
    assert pld <= rdp <= 1.5 * pld


def test_rdp_calibration_needs_more_noise_than_pld():
    pld = noise_multiplier_for(2.0, 1e-5, 0.05, 20)
    rdp = noise_multiplier_for(2.0, 1e-5, 0.05, 20, accountant="rdp")
    assert pld < rdp < 1.3 * pld
    assert epsilon_spent(rdp, 0.05, 20, 1e-5, accountant="rdp") <= 2.0


def test_population_is_the_real_one():
    # FLAIR's anchor: sampling 5,000 of 1e7 instead of 5,000 of 41,131 users needs far less noise
    rounds, delta = 20, 1e-5
    right = calibrate(2.0, delta, rounds=rounds, cohort_size=200, population=41_131, noise_cohort_size=5000)
    wrong = calibrate(
        2.0, delta, rounds=rounds, cohort_size=200, population=10_000_000, noise_cohort_size=5000
    )
    assert right.noise_multiplier > 3 * wrong.noise_multiplier
    assert epsilon_spent(wrong.noise_multiplier, right.sampling_probability, rounds, delta) > 4 * 2.0


def test_impossible_cohorts_are_errors():
    with pytest.raises(OptionError, match="exceeds the store's 100 train users"):
        calibrate(2.0, 1e-5, rounds=10, cohort_size=10, population=100, noise_cohort_size=500)
    with pytest.raises(OptionError, match="between 1 and the 5 train users"):
        calibrate(2.0, 1e-5, rounds=10, cohort_size=10, population=5)


class TestPflAggregation:
    """User sampling, clipping and the fixed denominator as run in pfl."""

    pfl_stats = pytest.importorskip("pfl.stats")

    def stats(self, *values: float):
        torch = pytest.importorskip("torch")
        pytest.importorskip("pfl.model.pytorch")  # selects pfl's PyTorch ops, as a training run does
        return self.pfl_stats.MappedVectorStatistics({"w": torch.tensor(list(values))})

    def test_fixed_denominator_divides_the_sum_by_the_cohort_size(self):
        from fedimage.loaders.pfl import FixedDenominator

        fixed = FixedDenominator(4)
        total = None
        for values in ([1.0, 2.0], [3.0, 4.0]):
            user, _ = fixed.postprocess_one_user(stats=self.stats(*values), user_context=None)
            assert user.weight == 1
            total = user if total is None else total + user
        total, _ = fixed.postprocess_server(stats=total, central_context=None, aggregate_metrics=None)
        total.average()
        assert total["w"].tolist() == [
            1.0,
            1.5,
        ]  # (1 + 3) / 4, (2 + 4) / 4: not divided by the 2 who reported

    def test_user_updates_are_clipped_to_the_bound(self):
        from pfl.privacy import GaussianMechanism

        mechanism = GaussianMechanism(clipping_bound=0.5, relative_noise_stddev=1.0)
        clipped, _ = mechanism.constrain_sensitivity(self.stats(3.0, 4.0))
        assert float(clipped["w"].norm()) == pytest.approx(0.5)
        small, _ = mechanism.constrain_sensitivity(self.stats(0.3, 0.0))
        assert small["w"].tolist() == pytest.approx([0.3, 0.0])

    def test_cohorts_hold_distinct_users_and_follow_the_seed(self):
        from fedimage.loaders.pfl import CohortSampler

        users = [f"u{i}" for i in range(7)]
        draws = CohortSampler(users, 5, seed=3)
        cohorts = [[draws() for _ in range(5)] for _ in range(20)]
        assert all(len(set(cohort)) == 5 for cohort in cohorts)
        assert len({tuple(cohort) for cohort in cohorts}) > 1
        again = CohortSampler(users, 5, seed=3)
        assert [[again() for _ in range(5)] for _ in range(20)] == cohorts
        with pytest.raises(OptionError, match="between 1 and the 7 users"):
            CohortSampler(users, 8, seed=0)
