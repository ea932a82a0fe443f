"""MediaPipe Face Mesh timed on photos, run by ``kpcore bench`` in MediaPipe's own interpreter.

    $KPCORE_MEDIAPIPE_PYTHON kpcore/evaluation/mediapipe_timing.py photos.npy ROUNDS

mediapipe 0.10.21 pins ``numpy<2`` (kpcore's environment has numpy 2), so the
bench runs this file as a script under the interpreter named by
``$KPCORE_MEDIAPIPE_PYTHON`` (e.g. a venv with ``pip install mediapipe==0.10.21``),
on the very photos it times kpcore on (an ``(N, H, W, 3)`` RGB uint8 ``.npy``).
It imports only numpy and mediapipe, and prints one JSON object:
``ms`` (every timed call, round by round), ``faces`` (faces found per photo),
``mediapipe`` (its version).

Face Mesh is made as the issue's comparison asks:
``FaceMesh(static_image_mode=True, max_num_faces=10)`` (the face detector runs
on every photo, as kpcore's photo path does).
"""

from __future__ import annotations

import json
import sys
import time

WARMUP_CALLS = 3


def main(argv: list[str]) -> int:
    import mediapipe as mp
    import numpy as np

    photos = np.load(argv[1])
    rounds = int(argv[2])
    ms, faces = [], []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=10) as mesh:
        for _ in range(WARMUP_CALLS):
            mesh.process(photos[0])
        for r in range(rounds):
            for photo in photos:
                t0 = time.perf_counter()
                result = mesh.process(photo)
                ms.append((time.perf_counter() - t0) * 1000)
                if r == 0:
                    faces.append(len(result.multi_face_landmarks or []))
    print(json.dumps({"ms": ms, "faces": faces, "mediapipe": mp.__version__}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
