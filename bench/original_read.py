"""The original's status read, for `make bench` to measure trace-api's CPU against.

The original (see the seed, job-trace-system.md) answered GET
/api/v1/jobs/status/{message_id} with one find_one by message_id and the trace as JSON,
in Python with the MongoDB driver. FastAPI is not installed here, so this stands in for
it with the standard library's threading HTTP server and pymongo: the same driver and
the same work per read, without the framework (which only adds to the original's cost,
so a ratio against this one is on the safe side).

    python bench/original_read.py PORT MONGO_URI DATABASE COLLECTION
"""

import datetime
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pymongo import MongoClient

PREFIX = "/api/v1/jobs/status/"


def jsonable(value):
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    return str(value)


def main():
    port, uri, database, collection = sys.argv[1:5]
    traces = MongoClient(uri)[database][collection]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: with Nagle's algorithm on, the second
        # waits for the client's delayed ACK (40 ms). uvicorn sets TCP_NODELAY too.
        disable_nagle_algorithm = True

        def do_GET(self):
            if not self.path.startswith(PREFIX):
                return self.answer(404, {"detail": "Not Found"})
            message_id = self.path[len(PREFIX):].split("?", 1)[0]
            trace = traces.find_one({"message_id": message_id}, {"_id": 0})
            if trace is None:
                return self.answer(404, {"detail": f"Job trace not found: {message_id}"})
            self.answer(200, trace)

        def answer(self, status, body):
            data = json.dumps(body, default=jsonable).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        # The original's access log went to Cloud Logging as well; here it is discarded
        # to keep the bench's disk quiet, so it costs the original nothing.
        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
