"""Per-sensor drift-tracking baselines and slopes, gated while a sensor deviates, plus Hotelling T² across sensors.

The detector and its per-row scoring; what it reads off its fit rows is in ``baseline_t2_fit.py``,
its stored form and live state in ``baseline_t2_state.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from edge_agent.machine_detectors import baseline_t2_fit as calibration
from edge_agent.machine_detectors import baseline_t2_state as stored
from edge_agent.machine_detectors.base import Contribution


class BaselineT2Detector:
    """Machine rows scored against each sensor's own adaptive baseline and against their relations.

    Why this shape (measured on the SKAB pump bench, ``docs/machines.md``): a static model of
    normal fails on a real machine because slow quantities drift (the bench's temperatures move
    3-15 sigma within minutes), while a baseline that simply follows every sensor also follows
    the fault. So each sensor gets a **local-level Kalman filter** whose drift rate ``q`` and
    noise ``r`` are read off the fit rows' variogram (``Var(x[t+L] - x[t]) = 2 r + L q``): a
    sensor that drifts gets a baseline that moves, a stationary one a baseline that stays.

    A baseline is never allowed to learn faster than the smoothing below (``gain_cap`` x the
    smoothing rate): one that did would learn a step before the smoothed deviation showed it
    (the blind-spot check in ``docs/machines.md`` found 6-sigma steps of four of SKAB's eight
    sensors unflagged without the cap). A capped baseline's larger tracking error is taken
    into its spread.

    Per row and sensor:

    * ``deviation``: the innovation ``x - baseline``, smoothed by an EWMA over ``tau_s``
      seconds (a fault is a sustained deviation; one noisy reading is not);
    * ``z = deviation / (c * sqrt(zn2 * r + P))``: the deviation in units of its own normal
      spread, which is the smoothed measurement noise plus the baseline's uncertainty ``P``.
      ``c >= 1`` inflates it to the spread actually seen on the fit rows (real sensors are
      not the ideal model);
    * **gate**: while ``|z| >= k`` the sensor's baseline does not learn, so a fault stays
      visible instead of being learnt as the new normal. Its uncertainty still grows by ``q``
      per second, so a drifting sensor's frozen baseline loses its authority at the rate that
      sensor drifted in the fit rows (a temperature lets go in minutes, a flow holds), and a
      deviation that lasts ``hold_s`` seconds is accepted as the new normal: the baseline
      jumps to the sensor's smoothed level. ``hold_s`` is the one guess about how long a
      fault lasts; it is explicit and documented, not learnt.
    * **rate** (``rate_tau_s`` > 0): a baseline that follows a sensor's drift follows a ramp
      no faster than that drift too. So each sensor whose fit rows show it settling around a
      level within ``rate_tau_s`` (``estimates.settles``) also gets its slope watched: its
      EWMA over ``tau_s`` minus its EWMA over ``rate_tau_s`` (a ramp of slope a holds it at
      a (rate_tau_s - tau_s)), in units of that difference's normal spread (the sensor's
      local-level model, widened to what the fit rows show). ``|zr| >= k`` ("rising fast",
      "falling fast") gates the sensor like its level does: its baseline and its slow EWMA
      stop learning, so the level a ramp reaches stays visible after the ramp ends, and the
      spread of the held difference grows by ``q`` per second as a held baseline's does. A
      sensor whose level keeps moving at that scale (the bench's temperatures) has no rate
      channel: its fit rows cannot say how fast it normally moves.

    Score: ``max(max_j |z_j| / k, max_j |zr_j| / k, sqrt(z' R^-1 z) / k_t2)``. The first term is the largest
    single-sensor deviation; the second is Hotelling's T² of the ``z`` vector with ``R`` the
    correlation of ``z`` over the fit rows (shrunk towards the identity by ``shrink`` so that
    400 rows never make it near-singular), so that sensors which normally move together and
    now move apart score even when each stays inside its own band. ``k_t2`` is set so that
    both terms have the same false-alarm probability for independent Gaussian ``z`` (from
    ``k`` and the number of sensors), not tuned. Anomalous when ``score >= threshold`` (1.0).

    Cost: O(p²) pure Python per row of p sensors, ~10-20 µs for 8 (``make bench``).

    A model stored before the rate channels (no ``rate_tau_s`` in its params) loads as it was
    fitted, without them; its next fit adds them.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> load = np.zeros(600)                                  # a pump's load, fluctuating
    >>> for i in range(1, 600):
    ...     load[i] = 0.9 * load[i - 1] + rng.normal(0, 0.05)
    >>> rows = np.column_stack([10 + load + rng.normal(0, 0.01, 600),      # flow follows the load,
    ...                         5 + 2 * load + rng.normal(0, 0.02, 600)])  # and so does current
    >>> d = BaselineT2Detector()
    >>> stats = d.fit(rows[:400], np.arange(400.0), ["flow", "current"])
    >>> max(d.score_row(r, 1.0) for r in rows[400:].tolist()) < d.threshold
    True
    >>> broken = (rows[-1] + [-0.06, 0.12]).tolist()  # flow falls as current rises: both in band
    >>> bool(rows[:, 0].min() < broken[0] and broken[1] < rows[:, 1].max())
    True
    >>> max(d.score_row(broken, 1.0) for _ in range(30)) >= d.threshold
    True
    >>> [(c.sensor, "high" if c.z > 0 else "low") for c in d.contributions()]
    [('flow', 'low'), ('current', 'high')]
    """

    name: ClassVar[str] = "baseline_t2"

    def __init__(
        self,
        tau_s: float = 10.0,
        k: float = 5.0,
        hold_s: float = 600.0,
        shrink: float = 0.2,
        relation_r2: float = 0.5,
        gain_cap: float = 1.0,
        drift_significance: float = 0.0,
        rate_tau_s: float = 60.0,
        max_lag: int = 32,
        warmup_rows: int = 30,
        threshold: float = 1.0,
    ) -> None:
        for pname, value, ok in (
            ("tau_s", tau_s, tau_s > 0),
            ("k", k, k > 0),
            ("hold_s", hold_s, hold_s > 0),
            ("shrink", shrink, 0.0 <= shrink <= 1.0),
            ("relation_r2", relation_r2, 0.0 < relation_r2 <= 1.0),
            ("gain_cap", gain_cap, gain_cap > 0.0),
            ("drift_significance", drift_significance, drift_significance >= 0.0),
            ("rate_tau_s", rate_tau_s, rate_tau_s == 0.0 or rate_tau_s > tau_s),
            ("max_lag", max_lag, max_lag >= 2),
            ("warmup_rows", warmup_rows, warmup_rows >= 1),
            ("threshold", threshold, threshold > 0),
        ):
            if isinstance(value, bool) or not (ok and math.isfinite(value)):
                raise ValueError(f"{pname}={value!r} is out of range")
        self.tau_s = float(tau_s)
        self.k = float(k)
        self.hold_s = float(hold_s)
        self.shrink = float(shrink)
        self.relation_r2 = float(relation_r2)
        self.gain_cap = float(gain_cap)
        self.drift_significance = float(drift_significance)
        self.rate_tau_s = float(rate_tau_s)
        self.max_lag = int(max_lag)
        self.warmup_rows = int(warmup_rows)
        self.threshold = float(threshold)
        self.sensors: list[str] = []
        self._set_arrays(0, [], [])

    # ---- state -----------------------------------------------------------------------------
    def _set_arrays(self, p: int, rel_target: list[int], rel_coef: list[list[float]]) -> None:
        """Channels 0..p-1 are the sensors; channel p+i is relation i: sensor ``rel_target[i]``
        minus what its relation predicts from the others (``sum(rel_coef[i][k] * x[k])``)."""
        n = p + len(rel_target)
        self.rel_target = list(rel_target)
        self.rel_coef = [list(row) for row in rel_coef]
        # Plain lists of floats: indexing a list is ~3x cheaper than a numpy scalar, and the
        # per-row loop is the hot path.
        self.q = [0.0] * n  # baseline drift variance per second
        self.r = [1.0] * n  # measurement noise variance
        self.c = [1.0] * n  # spread inflation measured on the fit rows
        self.p_steady = [0.0] * n  # the baseline's steady-state posterior variance
        self.capped = [0.0] * n  # the gain per row when capped below the Kalman gain, else 0
        self.m = [0.0] * n  # baseline
        self.pv = [0.0] * n  # baseline variance now
        self.e = [0.0] * n  # smoothed innovation
        self.held = [0.0] * n  # seconds the gate has been closed
        # Rate channels, one per sensor (rate_tau_s > 0): the smoothed level over tau_s minus
        # the one over rate_tau_s, which a ramp of slope a holds at a * (rate_tau_s - tau_s).
        self.fast = [0.0] * p  # EWMA of the sensor over tau_s
        self.slow = [0.0] * p  # EWMA of the sensor over rate_tau_s
        self.rate_sd = [1.0] * p  # the normal spread of fast - slow, measured on the fit rows
        self.rate_ratio: list[float | None] = [None] * p  # fit statistics: see estimates.settles()
        self.last_zr = [0.0] * p
        self.cinv: list[list[float]] = [[0.0] * p for _ in range(p)]
        self.k_t2 = 1.0
        self.dt0 = 1.0
        self.zn2 = 0.0
        # The last row scored, for contributions().
        self.last_x = [math.nan] * n
        self.last_expected = [math.nan] * n
        self.last_z = [0.0] * n
        self._pred = [0.0] * n  # scratch: each channel's predicted baseline variance
        self._parts = [0.0] * p  # scratch: each sensor's part of T²
        self._gated = [False] * n  # scratch: which channels do not learn this row
        # For each relation channel: the relation channels of the sensors it is computed from.
        channel_of = {target: p + i for i, target in enumerate(rel_target)}
        self._rel_partners = [[channel_of[k] for k in range(p) if row[k] and k in channel_of] for row in self.rel_coef]

    def _derived(self) -> None:
        b0 = -math.expm1(-self.dt0 / self.tau_s)
        self.zn2 = b0 / (2.0 - b0)  # variance of an EWMA of unit white noise
        self._b0 = b0
        self._br0 = -math.expm1(-self.dt0 / self.rate_tau_s) if self.rate_tau_s > 0 else 0.0

    def _channels(self, x: np.ndarray) -> np.ndarray:
        """Rows of sensor values -> rows of channel values (sensors, then relation residuals)."""
        if not self.rel_target:
            return x
        coef = np.asarray(self.rel_coef)
        resid = x[:, self.rel_target] - x @ coef.T
        return np.hstack([x, resid])

    # ---- fitting (baseline_t2_fit.py) ---------------------------------------------------------
    def fit(self, rows: np.ndarray, ts: np.ndarray, sensors: Sequence[str]) -> dict[str, Any]:
        """Calibrate on ``rows`` (n x p sensors) at times ``ts``; returns what the fit found."""
        return calibration.fit(self, rows, ts, sensors)

    # ---- scoring ---------------------------------------------------------------------------
    def _step(self, x: list[float], dt: float, gate: bool = True) -> float:
        """Advance every channel by one row; returns the score (without ``threshold``)."""
        p = len(x)
        if self.rel_target:
            xs = list(x)
            for target, coef in zip(self.rel_target, self.rel_coef, strict=True):
                acc = x[target]
                for k in range(p):
                    acc -= coef[k] * x[k]
                xs.append(acc)
        else:
            xs = x
        beta = self._b0 if dt == self.dt0 else -math.expm1(-dt / self.tau_s)
        zn2, k = self.zn2, self.k
        m, pv, e, q, r, c = self.m, self.pv, self.e, self.q, self.r, self.c
        z, expected, pred = self.last_z, self.last_expected, self._pred
        nch = len(xs)
        worst = 0.0
        for j in range(nch):
            mj = m[j]
            expected[j] = mj
            pp = pv[j] + q[j] * dt
            pred[j] = pp
            ej = e[j] + beta * (xs[j] - mj - e[j])
            e[j] = ej
            zj = ej / (c[j] * math.sqrt(zn2 * r[j] + pp))
            z[j] = zj
            if zj > worst:
                worst = zj
            elif -zj > worst:
                worst = -zj
        rate_worst = beta_r = 0.0
        zr = self.last_zr
        if self.rate_tau_s > 0.0:
            beta_r = self._br0 if dt == self.dt0 else -math.expm1(-dt / self.rate_tau_s)
            fast, slow, rate_sd, held = self.fast, self.slow, self.rate_sd, self.held
            for j in range(p):
                sd = rate_sd[j]
                if not sd:
                    continue
                fj = fast[j] + beta * (x[j] - fast[j])
                fast[j] = fj
                h = held[j]
                if h == 0.0:
                    # Both levels take this row (after a long gap both are the row, not the
                    # slow one the level before the gap): learnt below unless the row gates.
                    sj = slow[j] + beta_r * (x[j] - slow[j])
                    v = (fj - sj) / sd
                else:
                    # While the sensor is gated its slow level is held, like its baseline: the
                    # channel shows how far it moved since, in the spread a drift of q per
                    # second gives that distance (a drifting sensor lets go, a stationary one holds).
                    v = (fj - slow[j]) / math.sqrt(sd * sd + q[j] * (h + dt))
                zr[j] = v
                if v > rate_worst:
                    rate_worst = v
                elif -v > rate_worst:
                    rate_worst = -v
        # Hotelling T² over the sensors and each sensor's part of it.
        parts = self._parts
        t2 = 0.0
        for i in range(p):
            row = self.cinv[i]
            acc = 0.0
            for j in range(p):
                acc += row[j] * z[j]
            parts[i] = z[i] * acc
            t2 += parts[i]
        t2 = t2 if t2 > 0.0 else 0.0
        single = worst / k
        joint = math.sqrt(t2) / self.k_t2
        # Gate: a channel deviating on its own, a sensor carrying an above-average part of a
        # joint deviation, and the relation channels of a broken relation's partners stop
        # learning: otherwise a fast baseline learns the fault within seconds.
        joint_limit = t2 / p if joint >= 1.0 else math.inf
        gated = self._gated
        any_gated = False
        for j in range(nch):
            zj = z[j]
            g = gate and (zj >= k or zj <= -k or (j < p and parts[j] >= joint_limit))
            gated[j] = g
            any_gated |= g
        if gate and rate_worst >= k:
            # A sensor moving fast for it: its level baseline stops following, so the level
            # it reaches stays visible after the movement ends (the rate channel then falls
            # back, the level channel holds the alarm).
            for j in range(p):
                if not gated[j] and (zr[j] >= k or zr[j] <= -k):
                    gated[j] = any_gated = True
        if any_gated and self.rel_target:
            for i, partners in enumerate(self._rel_partners):
                if gated[p + i]:
                    for ch in partners:
                        gated[ch] = True
        held, hold, capped = self.held, self.hold_s, self.capped
        for j in range(nch):
            pp = pred[j]
            if gated[j]:
                h = held[j] + dt
                if h > hold:
                    # Accepted as the new normal: the baseline takes the smoothed level (and
                    # a sensor's rate channel starts measuring its slope from here).
                    m[j] += e[j]
                    e[j] = 0.0
                    pv[j] = self.p_steady[j]
                    held[j] = 0.0
                    if j < p and self.rate_tau_s > 0.0:
                        self.slow[j] = self.fast[j]
                else:
                    held[j] = h
                    pv[j] = pp
            else:
                held[j] = 0.0
                if j < p and beta_r and self.rate_sd[j]:
                    self.slow[j] += beta_r * (x[j] - self.slow[j])
                cap = capped[j]
                if cap and pp <= self.p_steady[j] + q[j] * dt * 1.000001:
                    # Steady state of a capped channel: the fixed, slower gain.
                    gain = cap if dt == self.dt0 else -math.expm1(math.log1p(-cap) * dt / self.dt0)
                    pv[j] = self.p_steady[j]
                else:
                    gain = pp / (pp + r[j])
                    post = (1.0 - gain) * pp
                    pv[j] = post if not cap or post > self.p_steady[j] else self.p_steady[j]
                m[j] += gain * (xs[j] - m[j])
        self.last_x = xs
        rate = rate_worst / k
        if rate > single:
            single = rate
        return single if single > joint else joint

    def score_row(self, values: Sequence[float], dt: float) -> float:
        x = values if type(values) is list else [float(v) for v in values]
        if len(x) != len(self.sensors):
            raise ValueError(f"row has {len(x)} values, the model {len(self.sensors)} sensors")
        if dt >= self.hold_s:
            # Silent for longer than a deviation is held before it is accepted: whatever the
            # sensors read now is where the machine is (a restart after a day off, a machine
            # switched on again). Without this, a baseline re-synced by its grown uncertainty
            # left its smoothed deviation at the jump, and the next row alarmed at 6-12 sd.
            self._restart_at(x)
            dt = self.dt0
        return self._step(x, dt if dt > 0.0 else 0.0) * self.threshold

    def _restart_at(self, x: list[float]) -> None:
        xs = self._channels(np.asarray([x], dtype=np.float64))[0].tolist()
        self.m = xs
        self.e = [0.0] * len(xs)
        self.pv = list(self.r)  # a baseline read off one row is as uncertain as one reading
        self.held = [0.0] * len(xs)
        self.fast = list(x)
        self.slow = list(x)

    def contributions(self) -> list[Contribution]:
        """Per sensor, ranked by |z|: its own channel, or its relation channel when that one
        deviates more (then ``expected`` is what the other sensors say it should read)."""
        p = len(self.sensors)
        z, x, exp, e = self.last_z, self.last_x, self.last_expected, self.e
        best = {j: (z[j], x[j], exp[j], e[j], "high" if z[j] > 0 else "low") for j in range(p)}
        for i, target in enumerate(self.rel_target):
            ch = p + i
            if abs(z[ch]) > abs(best[target][0]):
                # value = residual + prediction, so expected = baseline + prediction.
                predicted = x[target] - x[ch]
                best[target] = (z[ch], x[target], exp[ch] + predicted, e[ch], "high" if z[ch] > 0 else "low")
        if self.rate_tau_s > 0.0:
            zr = self.last_zr
            for j in range(p):
                if abs(zr[j]) > abs(best[j][0]):
                    # Moving fast for it: expected is still its level baseline (held while the
                    # rate deviates), the deviation its smoothed distance from it.
                    best[j] = (zr[j], x[j], exp[j], e[j], "rising fast" if zr[j] > 0 else "falling fast")
        total = sum(v[0] * v[0] for v in best.values()) or 1.0
        out = [Contribution(self.sensors[j], float(v), float(ex), float(dev), float(zz), float(zz * zz / total), kind)
               for j, (zz, v, ex, dev, kind) in best.items()]
        out.sort(key=lambda c: -abs(c.z))
        return out

    def rebaseline(self) -> None:
        """Accept what the rows show now as normal: every channel's baseline takes its smoothed
        level, as ``hold_s`` does for one channel held that long. The relations and their
        correlation stay: the machine is the same machine at a new operating point."""
        for j in range(len(self.m)):
            self.m[j] += self.e[j]
            self.e[j] = 0.0
            self.pv[j] = self.p_steady[j]
            self.held[j] = 0.0
            self.last_z[j] = 0.0
        self.slow = list(self.fast)  # and the rate channels measure slopes from here
        self.last_zr = [0.0] * len(self.last_zr)

    # ---- live state (machines/checkpoint.py) and stored form (baseline_t2_state.py) ----------
    def live_state(self) -> dict[str, list[float]]:
        """Where the baselines are now (the model's files hold them as at the end of the fit)."""
        return stored.live_state(self)

    def set_live_state(self, state: dict[str, Any]) -> None:
        """Take back a ``live_state()`` of this model: checked whole before anything changes."""
        stored.set_live_state(self, state)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return stored.get_state(self)

    @classmethod
    def from_state(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BaselineT2Detector:
        return stored.from_state(cls, params, arrays)
