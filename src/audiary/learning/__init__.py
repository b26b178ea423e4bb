"""The learning loop's heavy half: Whisper rebuilt from CTranslate2 weights, fine-tuning with
Hugging Face `transformers`, conversion back, and the promotion gate. Needs the `train` extra
(torch, transformers); nothing the cloud functions or the transcriber run imports it."""
