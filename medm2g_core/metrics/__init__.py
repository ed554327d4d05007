"""Metrics of the literature, checked against reference implementations: images (PSNR, SSIM, FID, MS-SSIM ...)
and reports (BLEU, ROUGE-L, METEOR, CIDEr, finding F1)."""
