"""Bridges to other evaluation harnesses. Nothing here is imported by `import videochat2`: each module may
need a package the library itself does not (lmms-eval for `lmms_eval`)."""
