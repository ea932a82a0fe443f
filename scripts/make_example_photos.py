"""Rebuild the example photos in webapp/examples/ from scikit-image's public-domain / CC0 pictures (see CREDITS.md there)."""
import numpy as np
from PIL import Image, ImageOps
from skimage import data

out = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "webapp" / "examples") + "/"
astro = Image.fromarray(data.astronaut())
astro.save(out + "astronaut.jpg", quality=90)
cam = Image.fromarray(data.camera()).convert("RGB")
cam.save(out + "cameraman.jpg", quality=90)
# A group photo: six faces from the two public-domain / CC0 pictures at different sizes, mirrored, gray.
head = astro.crop((110, 0, 330, 250))  # the astronaut's head and shoulders
cam_head = cam.crop((150, 20, 330, 220))
W, H = 1440, 620
canvas = Image.new("RGB", (W, H), (70, 90, 120))
grad = np.linspace(0, 1, H)[:, None, None] * np.array([40, 50, 70])[None, None]
canvas = Image.fromarray((np.asarray(canvas) + grad).clip(0, 255).astype(np.uint8))
tiles = [(head, 300, False, False), (ImageOps.mirror(head), 260, False, False), (head, 200, True, False),
         (cam_head, 230, False, False), (ImageOps.mirror(head), 160, False, True), (head, 330, False, True)]
x = 20
for img, h, gray, rotate in tiles:
    t = img.resize((round(img.width * h / img.height), h), Image.Resampling.LANCZOS)
    if gray:
        t = ImageOps.grayscale(t).convert("RGB")
    if rotate:
        t = t.rotate(12, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(90, 110, 150))
    y = H - t.height - 20 - (0 if h > 250 else 120)
    canvas.paste(t, (x, y))
    x += t.width + 15
print(x)
canvas = canvas.crop((0, 225, 1430, H))
canvas.save(out + "group.jpg", quality=90)
