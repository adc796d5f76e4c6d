# The image of Conveyor's processes (coordinator, worker). Workflows' Python steps
# import from CONVEYOR_PYTHON_PATH (here the examples), then the working directory,
# /work: mount or copy your modules there, or point CONVEYOR_PYTHON_PATH at them.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY engine ./engine
COPY workers ./workers
COPY conveyor ./conveyor
RUN pip install --no-cache-dir . && useradd --create-home conveyor
COPY examples /work/examples
ENV CONVEYOR_PYTHON_PATH=/work/examples
WORKDIR /work
USER conveyor
ENTRYPOINT ["conveyor"]
CMD ["--help"]
