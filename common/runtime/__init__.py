"""Running the jobs: settings, the job frame, the crontab, clocks, the supervisor and
nginx."""
