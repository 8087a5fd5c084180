"""The allowed values of the params keys whose owners import torch (the diffusion processes, the
objectives, the guidance of the backbones). They live here, torch-free, so that reading and checking
params, which Snakemake does at every planning, imports no torch; the owners import them from here."""

NOISE_SCHEDULES = ("linear", "cosine")      # train.noise_schedule: gaussian_diffusion.get_named_beta_schedule
SAMPLERS = ("ddpm", "ddim")                 # sample.sampler: ancestral, or Song et al.'s deterministic DDIM
PREDICTIONS = ("eps", "v", "x0")            # train.prediction: what a DDPM network outputs
OBJECTIVES = ("ddpm", "rectified_flow")     # experiments.<id>.objective: diffusion.objective builds each
GUIDANCE_MODES = ("legacy3", "all")         # sample.guidance: legacy3 = the official DiT (channels 0..2)
