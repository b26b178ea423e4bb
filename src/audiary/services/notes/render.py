"""A diary note as Markdown, for people (`audiary notes JOB`)."""

from __future__ import annotations

from audiary.domain.notes import NoteRecord, TimeRange


def _at(source: TimeRange | None) -> str:
    if source is None:
        return ""
    minutes, seconds = divmod(int(source.start), 60)
    return f" _({minutes}:{seconds:02d})_"


def to_markdown(record: NoteRecord) -> str:
    note = record.note
    lines = [f"# {note.title}", ""]
    facts = [f"**Date:** {note.date}" if note.date else "",
             f"**Mood:** {note.mood}" if note.mood else ""]
    if any(facts):
        lines += [" · ".join(f for f in facts if f), ""]
    lines += [note.summary, ""]
    if note.highlights:
        lines += ["## Highlights", *[f"- {h.text}{_at(h.source)}" for h in note.highlights], ""]
    if note.action_items:
        lines += ["## To do"]
        lines += [f"- [ ] {a.text}{f' (due {a.due})' if a.due else ''}{_at(a.source)}"
                  for a in note.action_items]
        lines.append("")
    if note.people:
        lines += [f"**People:** {', '.join(note.people)}"]
    if note.places:
        lines += [f"**Places:** {', '.join(note.places)}"]
    if note.tags:
        lines += [f"**Tags:** {' '.join('#' + t.replace(' ', '-') for t in note.tags)}"]
    how = "offline extractive summary (no LLM)" if record.extractive else (
        f"{record.provider} {record.model}, prompt {record.prompt_version}, "
        f"{record.input_tokens}+{record.output_tokens} tokens, ${record.cost_usd:.4f}"
    )
    lines += ["", f"---\n_Written by {how}{' (from cache)' if record.cached else ''}._"]
    return "\n".join(lines) + "\n"
