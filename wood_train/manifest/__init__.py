"""The hard-OoD manifest: the contract between curation (writes it) and training (reads it).

A manifest (schema version 1, see ``data_manifests/SCHEMA.md``) is a folder with two files::

    manifest.csv        one row per reviewed image, sorted by sha256
    manifest.meta.json  schema_version, image_root, classes, provenance, mining, label_policy

Rooms: ``contract`` (names, columns, verdicts, policies, ``ManifestError``), ``validate``
(``validate_manifest`` checks one completely and raises a single ``ManifestError`` naming every
offending row), ``write`` (``write_manifest``, atomic) and ``ood_list`` (``load_ood_list``, the
trainer's entry, which also reads the reference implementation's plain ``ood_list.txt``).
"""
