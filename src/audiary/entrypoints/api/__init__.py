"""The HTTPS API (`functions/api`): uploads, jobs, transcripts, notes, feedback, webhooks."""
