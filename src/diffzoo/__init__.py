"""diffzoo: reproduce, compare and extend diffusion backbones (DiT, DiffuSSM, DiS, DiT-MoE)."""
__version__ = "0.1.0"
