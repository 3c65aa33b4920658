"""The zipping procedure (:mod:`~tfmot_zip.zipping.zipper`), the public API
(:mod:`~tfmot_zip.zipping.api`), the report, schedules and the Keras callback."""
