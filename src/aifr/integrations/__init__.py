"""Agent-framework adapters: aifr capabilities as a framework's tools (optional extras).

Each adapter lives in its own module and imports its framework only there:
``aifr.integrations.pydantic_ai`` (extra ``pydantic-ai``) and
``aifr.integrations.langchain`` (extra ``langchain``). Every call goes through
``Runtime.ainvoke``; a denial, a pending approval or a failure reaches the model as a
tool result it can read (:mod:`.results`), never as an exception that ends its loop.
"""
