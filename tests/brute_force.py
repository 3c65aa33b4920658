"""Brute-force references shared by the tests (tests/ is on sys.path through the root conftest)."""
import numpy as np


def brute_force_merge(a, b, h_a, h_b, idx_a, idx_b):
    """Solves min 1/2 da' H_A da + 1/2 db' H_B db  s.t.  P_A(a + da) = P_B(b + db) by KKT."""
    d_a, d_b, s = a.size, b.size, len(idx_a)
    p_a = np.zeros((s, d_a)); p_a[np.arange(s), idx_a] = 1
    p_b = np.zeros((s, d_b)); p_b[np.arange(s), idx_b] = 1
    kkt = np.zeros((d_a + d_b + s,) * 2)
    kkt[:d_a, :d_a] = h_a
    kkt[d_a:d_a + d_b, d_a:d_a + d_b] = h_b
    kkt[:d_a, d_a + d_b:] = p_a.T
    kkt[d_a:d_a + d_b, d_a + d_b:] = -p_b.T
    kkt[d_a + d_b:, :d_a] = p_a
    kkt[d_a + d_b:, d_a:d_a + d_b] = -p_b
    rhs = np.zeros(d_a + d_b + s)
    rhs[d_a + d_b:] = p_b @ b - p_a @ a
    sol = np.linalg.solve(kkt, rhs)
    da, db = sol[:d_a], sol[d_a:d_a + d_b]
    value = 0.5 * da @ h_a @ da + 0.5 * db @ h_b @ db
    return value, a + da, b + db
