"""The phantom's vectorised signal equations against the event-by-event reference, for any parameters."""

from __future__ import annotations

import numpy as np
import pytest
import reference_signals as ref
from hypothesis import given, settings
from hypothesis import strategies as st

from qmrbids.phantom import signals

t1s = st.lists(st.floats(0.02, 4.0), min_size=1, max_size=8).map(np.array)


@given(t1=t1s, flip=st.floats(1, 150), tr=st.floats(0.005, 10.0), b1=st.floats(0.5, 1.5),
       te=st.floats(0.001, 0.05), mt=st.one_of(st.none(), st.floats(0, 0.1)))
@settings(max_examples=60, deadline=None)
def test_spoiled_gradient_echo_is_the_steady_state(t1, flip, tr, b1, te, mt):
    m0, t2s, b1s = np.ones_like(t1), np.full_like(t1, 0.03), np.full_like(t1, b1)
    mts = None if mt is None else np.full_like(t1, mt)
    got = signals.spgr(m0, t1, t2s, b1s, flip, tr, te, mts)
    want = ref.spgr(m0, t1, t2s, b1s, flip, tr, te, mts)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@given(t1=t1s, ti=st.floats(0.01, 3.0), extra=st.floats(0.1, 8.0), eff=st.floats(0.8, 1.0))
@settings(max_examples=60, deadline=None)
def test_inversion_recovery_is_the_steady_state(t1, ti, extra, eff):
    m0, t2 = np.ones_like(t1), np.full_like(t1, 0.08)
    got = signals.ir_se(m0, t1, t2, ti, ti + extra, 0.01, eff)
    want = ref.ir_se(m0, t1, t2, ti, ti + extra, 0.01, eff)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


@given(t1=t1s, b1=st.floats(0.6, 1.4), n=st.integers(20, 200), flips=st.tuples(st.floats(2, 10), st.floats(2, 10)))
@settings(max_examples=20, deadline=None)
def test_mp2rage_matches_a_pulse_by_pulse_simulation(t1, b1, n, flips):
    m0, t2s, b1s = np.ones_like(t1), np.full_like(t1, 0.05), np.full_like(t1, b1)
    tr_exc, tis, tr_prep = 0.007, (0.7, 2.5), 5.0
    got = signals.mp2rage(m0, t1, t2s, b1s, tr_prep=tr_prep, tr_exc=tr_exc, n_shots=n, inversion_times=tis,
                          flip_degs=flips, te=0.003, efficiency=0.96)
    want = ref.mp2rage(m0, t1, t2s, b1s, tr_prep, tr_exc, n, tis, flips, 0.003, 0.96)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-8, atol=1e-12)
    uni = signals.uni(*got)
    assert np.all(np.abs(uni) <= 0.5)


def test_mp2rage_rejects_impossible_timing():
    one = np.ones(1)
    with pytest.raises(ValueError, match="impossible"):
        signals.mp2rage(one, one, one, one, tr_prep=2.0, tr_exc=0.01, n_shots=200, inversion_times=(0.7, 1.0),
                        flip_degs=(4, 5), te=0.003, efficiency=0.96)


def test_air_gives_exactly_zero_signal():
    zero = np.zeros(3)
    assert not np.any(signals.spgr(zero, zero, zero, np.ones(3), 20, 0.015, 0.002))
    assert not np.any(signals.ir_se(zero, zero, zero, 0.1, 10, 0.01, 0.96))
    assert not np.any(signals.dwi(zero, zero, zero, zero, 4, 0.06, 1000))
    g1, g2 = signals.mp2rage(zero, zero, zero, np.ones(3), tr_prep=5, tr_exc=0.007, n_shots=160,
                             inversion_times=(0.7, 2.5), flip_degs=(4, 5), te=0.003, efficiency=0.96)
    assert not np.any(g1) and not np.any(g2) and not np.any(signals.uni(g1, g2))
