"""Just enough multipart/form-data to read one uploaded file (no python-multipart dependency).

Llama Deploy's client uploads the deployment file as one part
``Content-Disposition: form-data; name="config_file"; filename="upload"``.
"""

from __future__ import annotations

from email.message import Message

from llamactl.server.errors import InvalidRequest

__all__ = ["read_form_file"]


def _boundary(content_type: str) -> bytes:
    msg = Message()
    msg["content-type"] = content_type
    if msg.get_content_type() != "multipart/form-data":
        raise InvalidRequest(
            f"expected a multipart/form-data upload with the deployment file in field 'config_file', "
            f"got content type '{content_type or '(none)'}'"
        )
    boundary = msg.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise InvalidRequest("the multipart/form-data upload has no boundary in its Content-Type")
    return boundary.encode("latin-1")


def _part_name(headers: bytes) -> str | None:
    for line in headers.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-disposition":
            msg = Message()
            msg["content-disposition"] = value.decode("latin-1").strip()
            name = msg.get_param("name", header="content-disposition")
            return name if isinstance(name, str) else None
    return None


def read_form_file(body: bytes, content_type: str, field: str) -> bytes:
    """The content of form field ``field`` of a multipart/form-data ``body``.

    Raises:
        InvalidRequest: not multipart, malformed, or the field is missing.
    """
    delimiter = b"--" + _boundary(content_type)
    names: list[str] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise InvalidRequest("the multipart/form-data upload is malformed: a part has no header end")
        name = _part_name(head.lstrip(b"\r\n"))
        if name == field:
            return content[:-2] if content.endswith(b"\r\n") else content
        if name is not None:
            names.append(name)
    found = f" (found {', '.join(names)})" if names else ""
    raise InvalidRequest(f"the upload has no field '{field}'{found}: send the deployment YAML as '{field}'")
