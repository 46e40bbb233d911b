"""`python app.py` (= `devops-agent serve`) serves DevOps Agent on http://127.0.0.1:5000."""

from devops_agent.cli import serve

if __name__ == "__main__":
    serve(host=None, port=None, workers=1)
