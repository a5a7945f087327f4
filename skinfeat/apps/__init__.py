"""What users look at and talk to: the HTTP server (``serve``), the browser page
(``web``), saliency (``explain``) and the HTML report (``report``)."""
