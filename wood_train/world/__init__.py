"""The spurious-cue world: the project's embedded dataset, written in the VOC 2012 layout.

Each foreground class has an object and a large context cue it stands on (train on rails, boat on
water, aeroplane in sky, sheep on grass, car on road, bird in foliage). In train/val a cue never
appears without its object, so a classifier trained on image labels learns the cue and its CAMs
spill onto it. The unlabelled pool holds what curation must sort out: hard OoDs (cues, no object),
easy OoDs (clutter only), contamination (images with objects) and near-duplicates::

    OUT/world.yaml                            resolved config, provenance, names, counts
    OUT/VOC2012/JPEGImages/<id>.jpg           ids "w_000000", ...
    OUT/VOC2012/SegmentationClass/<id>.png    0 background, c = class c, 255 object edge
    OUT/VOC2012/CueMasks/<id>.png             0 no cue, c = cue of class c
    OUT/VOC2012/ImageSets/Segmentation/{train,val}.txt
    OUT/VOC2012/{class_names,cue_names}.txt, cls_labels.npy
    OUT/pool/p_<hex>.jpg                      unlabelled pool; names leak nothing
    OUT/truth/pool_truth.csv                  file, kind, cues, objects, duplicate_of, transform

Rooms: ``config`` (WorldConfig and presets), ``draw`` (shapes, cues, objects, scenes),
``scenes`` (what each stream draws, near-duplicates), ``generate`` (writing a world, the
``hardood world`` command) and ``truth`` (reading the pool's truth; evaluation only).

``generate_world`` is deterministic: each image draws from its own generator seeded by
(seed, stream, index), so every file except world.yaml's provenance is byte-identical across runs.
"""
