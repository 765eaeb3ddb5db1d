"""Quality control: protocol compliance, image-quality metrics, phantom metrology, reports."""
