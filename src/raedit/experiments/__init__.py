"""Small-scale reproductions of the paper's claims (`raedit experiment NAME`), each writing a plot and a table
(markdown and JSON) under docs/results/ with the command that produced it."""

EXPERIMENTS = {
    "width": "raedit.experiments.width",
    "shift": "raedit.experiments.shift",
    "noise-aug": "raedit.experiments.noise_aug",
    "head": "raedit.experiments.head",
    "pixel": "raedit.experiments.pixel",
    "raev2": "raedit.experiments.raev2",
}
