"""The edge runner: what a device needs to run archlab's TFLite files (LiteRT + numpy)."""
