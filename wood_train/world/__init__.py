"""The spurious-cue world: the project's embedded dataset, written in the VOC 2012 layout.

Each foreground class has an object and a large context cue it stands on (train on rails, boat on
water, aeroplane in sky, sheep on grass, car on road, bird in foliage). In train/val a cue never
appears without its object, so a classifier trained on image labels learns the cue and its CAMs
spill onto it. The unlabelled pool holds what curation must sort out: hard OoDs (cues, no object),
easy OoDs (clutter only), contamination (images with objects) and near-duplicates.

Generator versions 2 to 4 make the pool behave like a real candidate pool (OpenImages scored by a
VOC classifier): most images score low, the few that score high are the ones worth a verdict, and the
cue problem stays. Each choice mirrors a property of real data
(``benches/world_properties.py`` measures the result on any seed):

- **Six classes, two with a cue above them** (sky, foliage) and four below. With four classes
  and one sky class, "no cue below" meant aeroplane, and every clutter image voted aeroplane.
  Real label sets are large enough that no class is the answer by elimination.
- **Background-only scenes** (``p_background``, 15% of train/val): clutter and ground, label all
  zero. Real photo collections hold many scenes with none of the C classes, and a real classifier
  has seen the same walls, fields and streets around every class and without any, so they carry
  no class evidence. Without them the classifier had never seen an image that is no class, and
  scored clutter near 1.
- **Clutter in every image** (base tone, distractor textures and shapes, some as bands), so its
  textures and band geometry appear with every class and without any: no class evidence.
- **Clutter of every hue, and vivid things that are no class** (version 3): pale backgrounds of
  any colour, and half the distractor shapes saturated, as real walls, doors and bins come in
  every colour. With grey and beige clutter only, one class became the default answer for images
  without any (44% of the easy OoDs' votes on one seed, 49% on another).
- **Objects recognisable by themselves** (version 4): every object has colours and a pattern that
  no clutter has (the boat a white hull with a red band and a striped sail, the aeroplane white
  with coloured wing tips). A real classifier can tell a boat from a brick wall even on dry land.
  With a brown hull and a cream sail (the colours of bricks and sand), boats without water were
  never recognised. Those positives kept pulling the boat score up on everything, and boat became
  the default answer for object-free images (51% of the easy OoDs' votes on one seed).
- **A ground under the sky classes** (``p_ground``): a band of a clutter texture where a scene's
  bottom holds no cue (aeroplane and bird, a missing cue, background-only scenes). Real planes
  fly over fields and towns; a bare lower half must not say "a sky class".
- **The cue still never appears without its object in train/val** (``p_cue`` 0.9 of objects
  have theirs), so the classifier learns the cue, its CAMs spill onto it (the spurious-activation
  rate stays high) and a cue alone (a hard OoD) fools it, as rails alone fool a VOC "train".
- **Hard OoDs show their cue at any size** (``hard_cue_extent``), from a strip of rails to a
  whole field: in a real pool some cue-only images fool the classifier completely and others
  only a little, so their scores spread instead of all reading 1.00.
- **A realistic pool mix**: hard OoDs are a minority (150 of 1,200 files), contamination (images
  with objects that tags missed) is about a fifth, easy OoDs are the rest, plus near-duplicates.
  Contaminated images hold small objects (``contaminated_object_size``): the objects tags miss are
  the small and peripheral ones, and they score about as high as a cue, so the annotators' check
  is needed.

The layout on disk::

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
``hardood world`` command), ``truth`` (reading the pool's truth; evaluation only) and
``properties`` (the pool's measurable properties, for the tests and the bench).

``generate_world`` is deterministic: each image draws from its own generator seeded by
(seed, stream, index), so every file except world.yaml's provenance is byte-identical across runs.
"""
