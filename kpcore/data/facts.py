"""Dataset facts, as data, in one place.

Coordinate convention used everywhere in kpcore (written down once, tested in
``tests/test_geometry.py``):

* a point is ``(x, y)`` in **pixels**, **0-based**, where ``(0, 0)`` is the
  centre of the top-left pixel and ``(W - 1, H - 1)`` the centre of the
  bottom-right one;
* arrays of points have shape ``(K, 2)``, column 0 is x (width axis),
  column 1 is y (height axis); images are numpy ``(H, W, C)`` or torch
  ``(C, H, W)``; sizes are written ``(width, height)`` only where PIL wants them;
* a horizontal flip maps ``x -> W - 1 - x`` and swaps left/right point ids.

"Left" and "right" are the **subject's**: the subject's left eye is on the
right side of a frontal photo.

Transforms, metrics, renderers and models read these facts; nothing
re-derives them from ``len(points)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


def _chain(ids: range | list[int], closed: bool = False) -> list[tuple[int, int]]:
    ids = list(ids)
    edges = list(zip(ids[:-1], ids[1:], strict=True))
    if closed:
        edges.append((ids[-1], ids[0]))
    return edges


@dataclass(frozen=True)
class DatasetFacts:
    """Everything the code needs to know about one keypoint layout.

    Attributes:
        name: Registry key, e.g. ``"ibug300w"``.
        title: Human-readable name for plots.
        num_points: Number of keypoints K.
        groups: Named groups of point ids (jaw, brows, eyes, nose, mouth), for plots.
        flip_pairs: Pairs ``(a, b)`` of point ids that trade places in a horizontal flip.
        norm_points: The two point ids whose distance normalises NME.
        norm_name: What that distance is called (e.g. "inter-ocular (outer corners)").
        edges: Pairs of point ids joined when drawing the skeleton.
        licence: Licence note shipped with models trained on this data.
        citation: How to cite the data.
    """

    name: str
    title: str
    num_points: int
    groups: dict[str, list[int]]
    flip_pairs: list[tuple[int, int]]
    norm_points: tuple[int, int]
    norm_name: str
    edges: list[tuple[int, int]]
    licence: str = ""
    citation: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = self.num_points
        seen: set[int] = set()
        for a, b in self.flip_pairs:
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise ValueError(f"{self.name}: bad flip pair {(a, b)} for {k} points")
            if a in seen or b in seen:
                raise ValueError(f"{self.name}: point in two flip pairs: {(a, b)}")
            seen.update((a, b))
        for a, b in self.edges:
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"{self.name}: bad edge {(a, b)} for {k} points")
        covered = sorted(i for ids in self.groups.values() for i in ids)
        if covered != list(range(k)):
            raise ValueError(f"{self.name}: groups must cover each of the {k} points once")

    @cached_property
    def flip_permutation(self) -> np.ndarray:
        """Index array ``perm`` such that ``flipped_points = mirrored_points[perm]``."""
        perm = np.arange(self.num_points)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @cached_property
    def group_of(self) -> list[str]:
        """Group name of each point id."""
        out = [""] * self.num_points
        for g, ids in self.groups.items():
            for i in ids:
                out[i] = g
        return out

    def subset(self, ids: list[int], name: str, title: str, norm_points: tuple[int, int] | None = None,
               norm_name: str | None = None, extra: dict | None = None) -> DatasetFacts:
        """Facts for a task that uses only some of the points (e.g. the nose tip).

        Flip pairs and edges are kept only where both ends survive; a point whose
        partner is dropped has no partner. ``norm_points`` are given in the *new* ids.
        """
        remap = {old: new for new, old in enumerate(ids)}
        return DatasetFacts(
            name=name,
            title=title,
            num_points=len(ids),
            groups={g: [remap[i] for i in v if i in remap] for g, v in self.groups.items()
                    if any(i in remap for i in v)},
            flip_pairs=[(remap[a], remap[b]) for a, b in self.flip_pairs if a in remap and b in remap],
            norm_points=norm_points if norm_points is not None else (0, 0),
            norm_name=norm_name if norm_name is not None else self.norm_name,
            edges=[(remap[a], remap[b]) for a, b in self.edges if a in remap and b in remap],
            licence=self.licence,
            citation=self.citation,
            extra={"parent": self.name, "parent_ids": list(ids), **(extra or {})},
        )


# --------------------------------------------------------------------------- IMM
# Paths of the .asf files (see shared data README): 0 jaw 0-12, 1 subject's left
# eye 13-20 (image right), 2 subject's right eye 21-28, 3 left brow 29-33,
# 4 right brow 34-38, 5 mouth 39-46, 6 nose 47-57. Mirror correspondences were
# read off the coordinates of 01-1m.asf (a frontal face): each eye starts at its
# outer corner and runs over the top; each brow starts at its inner end; the
# mouth starts at the image-left corner; the nose runs from the image-left top of
# the bridge round the nostrils (52 = tip, bottom centre) up the other side.
IMM_NOSE_TIP = 52
IMM_FACTS = DatasetFacts(
    name="imm",
    title="IMM Face Database (58 points)",
    num_points=58,
    groups={
        "jaw": list(range(0, 13)),
        "left_eye": list(range(13, 21)),
        "right_eye": list(range(21, 29)),
        "left_brow": list(range(29, 34)),
        "right_brow": list(range(34, 39)),
        "mouth": list(range(39, 47)),
        "nose": list(range(47, 58)),
    },
    flip_pairs=(
        [(i, 12 - i) for i in range(6)]  # jaw, 6 is the chin
        + [(13 + i, 21 + i) for i in range(8)]  # eyes, outer corner first
        + [(29 + i, 34 + i) for i in range(5)]  # brows, inner end first
        + [(39, 43), (40, 42), (44, 46)]  # mouth; 41 and 45 are on the midline
        + [(47, 57), (48, 56), (49, 55), (50, 54), (51, 53)]  # nose; 52 is the tip
    ),
    # IMM has no 300-W-style eye-corner convention; we use the two outer eye
    # corners (first point of each eye path), the same definition as 300-W's
    # 36/45, so NME is comparable in spirit across the two datasets.
    norm_points=(13, 21),
    norm_name="inter-ocular distance (outer eye corners 13 and 21)",
    edges=(
        _chain(range(0, 13))
        + _chain(range(13, 21), closed=True)
        + _chain(range(21, 29), closed=True)
        + _chain(range(29, 34))
        + _chain(range(34, 39))
        + _chain(range(39, 47), closed=True)
        + _chain(range(47, 58))
    ),
    licence="IMM Face Database: free for education and research.",
    citation=(
        "M. B. Stegmann, B. K. Ersboll, R. Larsen, 'FAME - a flexible appearance modelling "
        "environment', IEEE Trans. Medical Imaging 22(10), 2003."
    ),
)

IMM_NOSE_FACTS = IMM_FACTS.subset(
    [IMM_NOSE_TIP],
    name="imm_nose",
    title="IMM nose tip (1 point)",
    norm_points=(0, 0),
    norm_name="inter-ocular distance of the full IMM shape (points 13 and 21)",
    # One point has no distance of its own: NME divides by the parent's outer
    # eye corners, which the dataset loader keeps beside the target point.
    extra={"parent_norm_points": IMM_FACTS.norm_points},
)

# ------------------------------------------------------------------------ 300-W
W300_FACTS = DatasetFacts(
    name="ibug300w",
    title="iBUG 300-W (68 points)",
    num_points=68,
    groups={
        "jaw": list(range(0, 17)),
        "right_brow": list(range(17, 22)),
        "left_brow": list(range(22, 27)),
        "nose": list(range(27, 36)),
        "right_eye": list(range(36, 42)),
        "left_eye": list(range(42, 48)),
        "mouth": list(range(48, 68)),
    },
    flip_pairs=(
        [(i, 16 - i) for i in range(8)]  # jaw, 8 is the chin
        + [(17 + i, 26 - i) for i in range(5)]  # brows
        + [(31, 35), (32, 34)]  # nostrils; 27-30 and 33 on the midline
        + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
        + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip
        + [(60, 64), (61, 63), (65, 67)]  # inner lip
    ),
    norm_points=(36, 45),
    norm_name="inter-ocular distance (outer eye corners 36 and 45)",
    edges=(
        _chain(range(0, 17))
        + _chain(range(17, 22))
        + _chain(range(22, 27))
        + _chain(range(27, 31))
        + _chain(range(31, 36))
        + _chain(range(36, 42), closed=True)
        + _chain(range(42, 48), closed=True)
        + _chain(range(48, 60), closed=True)
        + _chain(range(60, 68), closed=True)
    ),
    licence="iBUG 300-W images and annotations: non-commercial research use only.",
    citation=(
        "C. Sagonas, E. Antonakos, G. Tzimiropoulos, S. Zafeiriou, M. Pantic, '300 Faces "
        "In-the-Wild Challenge: database and results', Image and Vision Computing, 2016."
    ),
)

# ------------------------------------------------------------------------- MTFL
# MTFL (Zhang et al., ECCV 2014) labels five points. Its "left" is the side on the
# image's left (the subject's right), so MTFL point 0 is the eye that 300-W numbers
# 36-41. The flip pairs are the same either way.
MTFL_FACTS = DatasetFacts(
    name="mtfl",
    title="MTFL (5 points)",
    num_points=5,
    groups={"eyes": [0, 1], "nose": [2], "mouth": [3, 4]},
    flip_pairs=[(0, 1), (3, 4)],
    norm_points=(0, 1),
    norm_name="inter-ocular distance (eye centres)",
    edges=[(0, 1), (3, 4)],
    licence="MTFL: research use only.",
    citation=(
        "Z. Zhang, P. Luo, C. C. Loy, X. Tang, 'Facial Landmark Detection by Deep Multi-task "
        "Learning', ECCV 2014."
    ),
    extra={
        # How each MTFL point is made from another layout's points: the mean of the ids listed.
        "from": {
            "ibug300w": [list(range(36, 42)), list(range(42, 48)), [30], [48], [54]],
        },
        # Where 300-W's convention puts each point relative to MTFL's, in units of the
        # eye-centre distance, x along the eye line (towards MTFL point 1), y across it
        # (down the face): medians over 400 frontal MTFL val faces of the shipped 300-W
        # model's mapped points minus the MTFL labels, less their mean (the shared shift).
        # 300-W's point 30 sits 3% higher than MTFL's nose tip, its mouth corners 2% wider.
        "offset_ibug300w": [[0.008, 0.013], [-0.007, 0.013], [0.001, -0.030], [-0.022, 0.007],
                            [0.019, -0.005]],
        # Head-pose classes of the label file (1..5).
        "pose_names": {1: "left profile", 2: "left", 3: "frontal", 4: "right", 5: "right profile"},
    },
)

FACTS: dict[str, DatasetFacts] = {
    f.name: f for f in (IMM_FACTS, IMM_NOSE_FACTS, W300_FACTS, MTFL_FACTS)
}


def five_point_matrix(layout: str) -> np.ndarray:
    """``(5, K)`` matrix ``A`` with ``A @ points`` = the MTFL five points of a ``layout`` shape.

    Raises:
        KeyError: no MTFL mapping is known for ``layout`` (the message lists those that are).
    """
    table = MTFL_FACTS.extra["from"]
    if layout not in table:
        raise KeyError(f"no mapping from layout {layout!r} to MTFL's five points; known: {sorted(table)}")
    k = FACTS[layout].num_points
    a = np.zeros((MTFL_FACTS.num_points, k), np.float32)
    for row, ids in enumerate(table[layout]):
        a[row, ids] = 1.0 / len(ids)
    return a


def get_facts(name: str) -> DatasetFacts:
    """Look up a keypoint layout by name (``imm``, ``imm_nose``, ``ibug300w``)."""
    try:
        return FACTS[name]
    except KeyError:
        raise KeyError(f"unknown keypoint layout {name!r}; known: {sorted(FACTS)}") from None
