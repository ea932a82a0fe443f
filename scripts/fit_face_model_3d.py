"""Recompute kpcore.live.pose.FACE_MODEL_68: a generic 3-D 68-point face from 300-W's 2-D labels.

    KPCORE_DATA=/path/to/data python scripts/fit_face_model_3d.py   # prints the table

Rank-3 factorisation with the metric upgrade (Tomasi & Kanade, IJCV 1992) of
the centred, scaled train + test shapes of ``ibug300w`` and their mirror
images
rotated to match the mean 2-D shape, made symmetric, in units of the
outer-eye-corner distance. The recovered depth is then multiplied by
DEPTH_SCALE: non-rigid variation (expressions, annotators' jaw lines) inflates
it to a nose tip 0.70 eye-corner widths in front of the outer eye corners,
twice the human proportion (about a third of that width, as in the common
six-point solvePnP head models)
0.5 gives 0.35.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
DEPTH_SCALE = 0.5
import numpy as np  # noqa: E402

from kpcore.data.datasets import load_split  # noqa: E402
from kpcore.data.facts import FACTS  # noqa: E402

f = FACTS["ibug300w"]
perm = np.asarray(f.flip_permutation)
S = [s.points.astype(np.float64) for s in load_split("ibug300w", "train")]
try:
    S += [s.points.astype(np.float64) for s in load_split("ibug300w", "test")]
except Exception as e:
    print("no test", e)
S = np.stack(S)
S = np.concatenate([S, np.stack([np.stack([-s[:, 0], s[:, 1]], 1)[perm] for s in S])])
S = S - S.mean(1, keepdims=True)
S = S / np.sqrt((S ** 2).sum((1, 2), keepdims=True))
F = len(S)
W = np.concatenate([S[:, :, 0], S[:, :, 1]], 0)  # rows: x of each frame, then y
U, sv, Vt = np.linalg.svd(W, full_matrices=False)
print("singular values", sv[:6] / sv[0])
M = U[:, :3] * np.sqrt(sv[:3])
X = np.sqrt(sv[:3])[:, None] * Vt[:3]
def row(a, b):
    return np.array([a[0]*b[0], a[0]*b[1]+a[1]*b[0], a[0]*b[2]+a[2]*b[0], a[1]*b[1], a[1]*b[2]+a[2]*b[1], a[2]*b[2]])
A, rhs = [], []
for i in range(F):
    mi, mj = M[i], M[F + i]
    A.append(row(mi, mi) - row(mj, mj))
    rhs.append(0)
    A.append(row(mi, mj))
    rhs.append(0)
A.append(row(M[0], M[0]))
rhs.append(1)
sol = np.linalg.lstsq(np.array(A), np.array(rhs), rcond=None)[0]
L = np.array([[sol[0], sol[1], sol[2]], [sol[1], sol[3], sol[4]], [sol[2], sol[4], sol[5]]])
w, V = np.linalg.eigh(L)
print("L eig", w)
Q = V @ np.diag(np.sqrt(np.clip(w, 1e-9, None)))
P = np.linalg.inv(Q) @ X  # 3 x 68
P = P.T
# align: frontal mean 2D shape axes. Rotate so that x,y match the mean 2D shape best (Procrustes on first two coords).
mean2d = S.mean(0)
# find rotation R (3x3) minimizing || (P R)[:, :2] - mean2d*scale ||
# do orthogonal Procrustes in 3D with target z from P projected: iterate
from scipy.optimize import minimize  # noqa: E402
from scipy.spatial.transform import Rotation as Rot  # noqa: E402


def loss(v):
    R = Rot.from_rotvec(v).as_matrix()
    Y = P @ R.T
    a = (Y[:, :2] * mean2d).sum() / (Y[:, :2] ** 2).sum()
    return ((a * Y[:, :2] - mean2d) ** 2).sum()
best = min((minimize(loss, v0) for v0 in np.random.default_rng(0).normal(0, 1.5, (20, 3))), key=lambda r: r.fun)
R = Rot.from_rotvec(best.x).as_matrix()
Y = P @ R.T
iod = np.linalg.norm(Y[36] - Y[45])
Y = Y / iod
# symmetrize: mirror x
Ym = Y.copy()
Ym[:, 0] *= -1
Ym = Ym[perm]
Y = (Y + Ym) / 2
Y = Y - Y[[36, 45, 30]].mean(0) * [1,1,0]
print("nose tip z - eye z", Y[30, 2] - Y[[36, 45], 2].mean(), "chin z", Y[8,2], "jaw0 z", Y[0,2])
print("y of eye, nose, chin", Y[36,1], Y[30,1], Y[8,1])
Y[:, 2] *= DEPTH_SCALE
print("nose tip in front of the outer eye corners, after DEPTH_SCALE:", round(float(Y[[36, 45], 2].mean() - Y[30, 2]), 3))
print("FACE_MODEL_68 = np.array([")
for r in Y:
    print("    (" + ", ".join(f"{v:6.3f}" for v in r) + "),")
print("])")
