"""Small OpenImages files in exactly the published formats, with the real MIDs of VOC's classes.

Each image's right answer is planted: ``EXPECTED`` maps an ImageID to the VOC class its labels
put in it (None: the image stays in the pool) and says why.
"""

from __future__ import annotations

import json
from pathlib import Path

# real MIDs, as in class-descriptions-boxable.csv
MID = {
    "Train": "/m/07jdr", "Boat": "/m/019jd", "Canoe": "/m/0ph39", "Barge": "/m/01btn",
    "Car": "/m/0k4j", "Limousine": "/m/01lcw4", "Van": "/m/0h2r6", "Taxi": "/m/0pg52",
    "Wheel": "/m/083wq", "Auto part": "/m/08dz3q", "Land vehicle": "/m/01prls",
    "Vehicle": "/m/07yv9", "Watercraft": "/m/01rzcn", "Person": "/m/01g317", "Man": "/m/04yx4",
    "Bird": "/m/015p6", "Duck": "/m/09ddx", "Animal": "/m/0jbk", "Tree": "/m/07j7r",
    "Plant": "/m/05s2s", "Skyscraper": "/m/079cl", "Building": "/m/0cgh4",
    "Kitchen & dining room table": "/m/0h8n5zk", "Table": "/m/04bcr3", "Furniture": "/m/0c_jw",
    "Entity": "/m/0bl9f",
}  # fmt: skip
UNKNOWN_MID = "/m/0zzzzzz"  # in no class-descriptions file

IMAGES = {  # ImageID -> (human rows, machine rows), each (MID name, confidence text)
    "000002b66c9c498e": ([("Train", "1")], []),
    "000002b97e5471a0": ([("Train", "0"), ("Building", "1")], []),
    "000002c707c9895e": ([], [("Boat", "0.3"), ("Plant", "0.8")]),
    "0000048549557964": ([], [("Boat", "0.5")]),
    "000004f4400f6ec5": ([("Boat", "0")], [("Boat", "0.9")]),
    "0000071d71a0a6f6": ([("Canoe", "1")], []),
    "000007cdf7cfb7a5": ([], [("Limousine", "0.7")]),
    "00000c4e3ebfb6d6": ([("Wheel", "1"), ("Tree", "1")], []),
    "0000113da4d5e7dc": ([("Duck", "1"), ("Kitchen & dining room table", "0")], []),
    "00001a21632de752": ([("Skyscraper", "1")], [(UNKNOWN_MID, "0.6")]),
}
EXPECTED = {
    "000002b66c9c498e": ("train", "human-verified Train"),
    "000002b97e5471a0": (None, "Train verified absent (Confidence 0)"),
    "000002c707c9895e": (None, "machine Boat below 0.5"),
    "0000048549557964": ("boat", "machine Boat at exactly 0.5"),
    "000004f4400f6ec5": (None, "human 'no boat' beats machine 0.9"),
    "0000071d71a0a6f6": ("boat", "Canoe lies under Boat in the hierarchy"),
    "000007cdf7cfb7a5": ("car", "Limousine lies under Car in the hierarchy"),
    "00000c4e3ebfb6d6": (None, "Wheel is a Part, not a Subcategory, of a vehicle"),
    "0000113da4d5e7dc": ("bird", "Duck lies under Bird in the hierarchy"),
    "00001a21632de752": (None, "only Skyscraper and an unknown MID"),
}
# the VOC -> OpenImages rows these tests need (the shipped map has all 20 classes)
VOC_MIDS = {"train": ["Train"], "boat": ["Boat"], "car": ["Car", "Taxi"], "bird": ["Bird"],
            "person": ["Person", "Man"], "diningtable": ["Table"]}  # fmt: skip


def write_label_files(folder: Path) -> tuple[Path, Path]:
    """The human-verified and the machine-generated image-label CSVs, as published."""
    folder.mkdir(parents=True, exist_ok=True)
    header = "ImageID,Source,LabelName,Confidence\n"
    human, machine = [header], [header]
    for image, (human_rows, machine_rows) in IMAGES.items():
        for name, confidence in human_rows:
            source = "crowdsource-verification" if name == "Tree" else "verification"
            human.append(f"{image},{source},{MID.get(name, name)},{confidence}\n")
        for name, confidence in machine_rows:
            machine.append(f"{image},machine,{MID.get(name, name)},{confidence}\n")
    human_path = folder / "oidv7-train-annotations-human-imagelabels.csv"
    machine_path = folder / "oidv7-train-annotations-machine-imagelabels.csv"
    human_path.write_text("".join(human))
    machine_path.write_text("".join(machine))
    return human_path, machine_path


def write_class_descriptions(folder: Path) -> tuple[Path, Path]:
    """Both published shapes: the headerless boxable file and v7's with a header."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(mid, name) for name, mid in MID.items()]
    boxable = folder / "class-descriptions-boxable.csv"
    boxable.write_text("".join(f"{mid},{name}\n" for mid, name in rows))
    v7 = folder / "oidv7-class-descriptions.csv"
    lines = ["LabelName,DisplayName\n"]
    lines += [f'{mid},"{name}"\n' if "," in name or "&" in name else f"{mid},{name}\n" for mid, name in rows]  # fmt: skip
    v7.write_text("".join(lines))
    return boxable, v7


def write_hierarchy(folder: Path) -> Path:
    """A subtree of ``bbox_labels_600_hierarchy.json``, same keys and nesting."""

    def node(name, sub=(), part=()):
        out = {"LabelName": MID[name]}
        if sub:
            out["Subcategory"] = list(sub)
        if part:
            out["Part"] = list(part)
        return out

    car = node("Car", [node("Limousine"), node("Van")])
    land = node("Land vehicle", [node("Train"), car, node("Taxi")],
                part=[node("Auto part", [node("Wheel")])])  # fmt: skip
    boat = node("Boat", [node("Barge"), node("Canoe")])
    vehicle = node("Vehicle", [land, node("Watercraft", [boat])])
    animal = node("Animal", [node("Bird", [node("Duck")])])
    furniture = node("Furniture", [node("Table", [node("Kitchen & dining room table")])])
    root = node("Entity", [vehicle, animal, furniture, node("Person"), node("Man")])
    path = folder / "bbox_labels_600_hierarchy.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(root, indent=4))
    return path
