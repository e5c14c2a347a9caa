"""Bridge: toydiff's guidance rules on diffusers image models (torch and diffusers, imported lazily).

`loop` is the guided denoising loop, `sd` the Stable Diffusion 1.5 / SDXL adapters, `cli` the command
`python -m toydiff bridge`. Importing this package imports neither torch nor diffusers.
"""
